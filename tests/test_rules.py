"""The pure decisions: result-code mapping, backoff, payload building, token rules."""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta

import jwt
import pytest
from firebase_admin import exceptions
from google.auth.exceptions import RefreshError
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from producer.errors import InvalidRequest
from producer.registrations import normalise_token
from schemas.codes import DeliveryStatus
from schemas.payload import (
    Payload,
    PayloadError,
    backendless_payload,
    check_push,
    device_locale,
    gcm_to_fcm,
    infobip_payload,
    normalise_locale,
    pick_locale,
    stored,
)
from schemas.settings import Settings
from schemas.tables import App
from simulators.credentials import make_apns_key
from worker.apns import ProviderToken
from worker.backoff import (
    COUNTDOWN_STEP,
    RETRY_RULES,
    RetryPlan,
    Scope,
    countdown_for,
    exhausted_code,
    lane_wake_s,
    pause_schedule,
    plan_retry,
    retry_delay,
    rule_for,
)
from worker.fcm import answer_from_error
from worker.outcomes import ProviderAnswer, classify
from worker.payloads import (
    apns_too_large,
    build_apns,
    build_fcm,
    choose_payload,
    device_payload,
    fcm_data_value,
    message_ttl,
)
from worker.ratelimit import (
    bucket_capacity,
    lane_rate_per_minute,
    sleep_for_tokens,
    task_wait_budget_s,
)


@pytest.mark.parametrize(
    ("status", "reason", "code", "retry", "deactivate"),
    [
        (200, None, 0, False, False),
        (400, "BadDeviceToken", 6, False, True),
        (410, "Unregistered", 7, False, True),
        (410, "ExpiredToken", 7, False, True),
        (413, "PayloadTooLarge", 9, False, False),
        (429, "TooManyRequests", 8, True, False),
        (503, "ServiceUnavailable", 11, True, False),
        (500, "InternalServerError", 11, True, False),
        (403, "InvalidProviderToken", 4, False, False),
        (403, "BadCertificateEnvironment", 4, False, False),
        (400, "DeviceTokenNotForTopic", 10, False, False),  # SEED-NOTES 8
        (400, "BadCollapseId", 1, False, False),
        (400, "MissingDeviceToken", 5, False, False),
        (429, "TooManyProviderTokenUpdates", 14, True, False),
        (418, "SomethingNew", 10, False, False),
        (None, "timeout", -1, True, False),
    ],
)
def test_apns_answers_map_through_the_one_table(
    status: int | None, reason: str | None, code: int, retry: bool, deactivate: bool
) -> None:
    out = classify("apns", ProviderAnswer(status, reason))
    assert (out.code, out.retry, out.deactivate) == (code, retry, deactivate)
    assert out.status == (
        DeliveryStatus.SENT
        if code == 0
        else DeliveryStatus.QUEUED
        if retry
        else DeliveryStatus.ERROR
    )


@pytest.mark.parametrize(
    ("status", "reason", "detail", "code"),
    [
        (404, "UNREGISTERED", None, 7),
        (403, "SENDER_ID_MISMATCH", None, 6),
        (429, "QUOTA_EXCEEDED", None, 14),
        (503, "UNAVAILABLE", None, 11),
        (500, "INTERNAL", None, 11),
        (401, "THIRD_PARTY_AUTH_ERROR", None, 4),
        (400, "INVALID_ARGUMENT", "The registration token is not valid; message.token: x", 6),
        (400, "INVALID_ARGUMENT", "Message is too big", 9),
        (400, "INVALID_ARGUMENT", "Invalid android.ttl", 1),
        (401, "UNAUTHENTICATED", None, 4),
        (502, None, None, 11),
    ],
)
def test_fcm_answers_map_through_the_one_table(
    status: int, reason: str | None, detail: str | None, code: int
) -> None:
    assert classify("fcm", ProviderAnswer(status, reason, detail=detail)).code == code


def test_the_seed_message_for_a_provider_rejection() -> None:
    out = classify("apns", ProviderAnswer(400, "DeviceTokenNotForTopic"))
    assert out.message == "The payload was rejected by APNs: DeviceTokenNotForTopic"


@given(attempt=st.integers(1, 30), draw=st.floats(0, 1))
def test_backoff_is_full_jitter_below_an_exponential_cap(attempt: int, draw: float) -> None:
    delay = retry_delay(11, attempt, cap_s=300, rand=lambda: draw)
    assert 0 <= delay <= min(300, 2 ** (attempt - 1))


def test_retry_after_wins_when_longer_and_quota_waits_at_least_a_minute() -> None:
    assert retry_delay(11, 1, retry_after=30, rand=lambda: 0.5) == 30
    assert retry_delay(11, 5, retry_after=1, rand=lambda: 1.0) == 16
    assert retry_delay(14, 1, rand=lambda: 0.0) == 60


def test_exhausted_retries_end_in_12_or_13() -> None:
    assert exhausted_code(11) == 12
    assert exhausted_code(-1) == 13
    assert set(RETRY_RULES) == {-1, 8, 11, 14, "ExpiredProviderToken"}


def test_an_alert_becomes_aps_alert_with_custom_keys_beside_it() -> None:
    req = build_apns(
        {
            "alert": {"title": "T", "body": "B"},
            "badge": 0,
            "sound": "ding",
            "data": {"k": 1},
            "collapse_id": "c",
            "time_to_live": 60,
            "thread_id": "th",
            "category": "cat",
            "mutable_content": True,
        }
    )
    assert req.body == {
        "k": 1,
        "aps": {
            "alert": {"title": "T", "body": "B"},
            "badge": 0,
            "sound": "ding",
            "category": "cat",
            "thread-id": "th",
            "mutable-content": 1,
        },
    }
    assert (req.push_type, req.priority, req.collapse_id, req.time_to_live) == (
        "alert",
        10,
        "c",
        60,
    )


def test_a_silent_push_is_a_background_push_at_priority_5() -> None:
    req = build_apns({"content_available": True, "data": {"sync": True}})
    assert req.body == {"sync": True, "aps": {"content-available": 1}}
    assert (req.push_type, req.priority) == ("background", 5)


def test_apns_size_limit_is_4096_bytes_and_5120_for_voip() -> None:
    assert not apns_too_large(build_apns({"alert": {"body": "x" * 4000}}))
    assert apns_too_large(build_apns({"alert": {"body": "é" * 2100}}))
    assert not apns_too_large(build_apns({"alert": {"body": "é" * 2100}, "push_type": "voip"}))


def test_fcm_silent_push_is_data_only() -> None:
    parts = build_fcm({"content_available": True, "data": {"a": 1}})
    assert parts.notification is None and parts.data == {"a": "1"}


@given(
    st.recursive(
        st.none() | st.booleans() | st.integers() | st.text(),
        lambda c: st.lists(c, max_size=3) | st.dictionaries(st.text(), c, max_size=3),
        max_leaves=8,
    )
)
def test_fcm_data_values_are_strings_the_app_recovers_with_one_json_parse(value: object) -> None:
    encoded = fcm_data_value(value)
    assert isinstance(encoded, str)
    if not isinstance(value, str):
        assert json.loads(encoded) == value


@pytest.mark.parametrize(
    ("token", "provider", "platform", "expect"),
    [
        ("iOS:" + "AB" * 32, None, None, ("apns", "ios", "ab" * 32)),
        (
            "android:abc:APA91b_xxxxxxxxxxxxxxxx",
            None,
            None,
            ("fcm", "android", "abc:APA91b_xxxxxxxxxxxxxxxx"),
        ),
        ("ab" * 32, None, "ipados", ("apns", "ipados", "ab" * 32)),
        (
            "ePqP4to:APA91bUoDCXP2yOIjAKs",
            "fcm",
            None,
            ("fcm", "android", "ePqP4to:APA91bUoDCXP2yOIjAKs"),
        ),
    ],
)
def test_tokens_normalise(
    token: str, provider: str | None, platform: str | None, expect: tuple[str, str, str]
) -> None:
    n = normalise_token(token, provider, platform)
    assert (n.provider, n.platform, n.token) == expect


@pytest.mark.parametrize(
    ("token", "provider", "rule"),
    [
        ("Android:abcdefghijklmnopqrstuvwxyz", None, "'iOS' or 'android'"),
        ("iOS:" + "ab" * 32, "fcm", "means provider apns"),
        ("ab" * 10, "apns", "64 to 200 hexadecimal"),
        ("short", "fcm", "20+ characters"),
    ],
)
def test_bad_tokens_name_the_rule(token: str, provider: str | None, rule: str) -> None:
    with pytest.raises(InvalidRequest, match=re.escape(rule)):
        normalise_token(token, provider, None)


# --- retries, lanes and rate limits (issue 3) -------------------------------------------------

NOW = datetime(2030, 1, 1, tzinfo=UTC)


def _plan(
    code: int,
    attempts: int,
    reason: str | None = None,
    *,
    expires_at: datetime | None = None,
    retry_after: float | None = None,
    wait_s: float | None = None,
    rand: Callable[[], float] = lambda: 0.5,
) -> RetryPlan:
    return plan_retry(
        code,
        reason,
        attempts,
        max_attempts=5,
        now=NOW,
        expires_at=expires_at,
        retry_after=retry_after,
        wait_s=wait_s,
        rand=rand,
    )


def test_the_retry_table_says_which_answers_retry_and_at_what_scope() -> None:
    assert {k for k, r in RETRY_RULES.items() if r.scope == Scope.LANE} == {14}
    assert rule_for(8) is RETRY_RULES[8]  # APNs TooManyRequests: that device only
    assert rule_for(4) is None  # wrong credentials are not retried…
    assert rule_for(4, "ExpiredProviderToken") is RETRY_RULES["ExpiredProviderToken"]  # …this is
    assert rule_for(4, "InvalidProviderToken") is None
    out = classify("apns", ProviderAnswer(403, "ExpiredProviderToken"))
    assert (out.code, out.retry, out.status) == (4, True, DeliveryStatus.QUEUED)


def test_retries_stop_at_the_attempt_limit_with_the_rules_final_code() -> None:
    assert _plan(11, 4).retry
    given_up = _plan(11, 5)
    assert (given_up.retry, given_up.final_code) == (False, 12)
    assert given_up.why == "gave up after 5 attempts"
    assert _plan(-1, 5).final_code == 13


def test_retries_stop_at_the_time_to_live() -> None:
    # A 4 s ceiling drawn at 0.5 is a 2 s wait: fine with 3 s left, expired with 1 s left.
    assert _plan(11, 3, expires_at=NOW + timedelta(seconds=3)).retry
    late = _plan(11, 3, expires_at=NOW + timedelta(seconds=1))
    assert (late.retry, late.final_code) == (False, 12)
    assert late.why.startswith("expired: time to live ends before the next try")
    assert _plan(8, 1, expires_at=NOW).final_code == 8


def test_a_longer_retry_after_wins_and_a_lane_wait_replaces_the_computed_delay() -> None:
    assert _plan(11, 1, retry_after=7.0).delay_s == countdown_for(7.0)
    assert _plan(14, 1, wait_s=61.0).delay_s == countdown_for(61.0)


def test_an_expired_provider_token_is_retried_at_once_and_only_once() -> None:
    first = _plan(4, 1, "ExpiredProviderToken")
    assert (first.retry, first.delay_s) == (True, 0.0)
    again = _plan(4, 2, "ExpiredProviderToken")
    assert (again.retry, again.final_code) == (False, 4)


@given(delay=st.floats(0, 10_000))
def test_countdowns_round_delays_up_onto_a_coarse_grid(delay: float) -> None:
    c = countdown_for(delay)
    assert c >= delay - 1e-3
    assert c <= max(0.05, delay * COUNTDOWN_STEP) + 1e-3


def test_a_lane_pause_starts_at_the_first_pause_and_doubles_to_the_cap() -> None:
    assert pause_schedule(60, 300) == [60, 120, 240, 300, 300, 300, 300, 300]
    assert pause_schedule(90, 30)[0] == 90  # the cap never shortens Google's minimum
    assert 10 <= lane_wake_s(10, rand=lambda: 0.0) <= 10 * COUNTDOWN_STEP
    assert 12.5 <= lane_wake_s(10, rand=lambda: 1.0) <= 12.5 * COUNTDOWN_STEP


def test_a_lanes_rate_is_the_apps_own_else_the_providers_default() -> None:
    settings = Settings()
    assert lane_rate_per_minute(App(name="a"), "fcm", settings) == 600_000
    assert lane_rate_per_minute(App(name="a"), "apns", settings) is None
    assert lane_rate_per_minute(App(name="a", fcm_rate_per_minute=600), "fcm", settings) == 600
    assert lane_rate_per_minute(App(name="a", apns_rate_per_minute=90), "apns", settings) == 90


def test_a_bucket_holds_a_tenth_of_a_second_and_at_least_one_token() -> None:
    assert bucket_capacity(600_000) == 1000  # a 500-delivery chunk goes at once
    assert bucket_capacity(1080) == 1  # 18/s: never more than the rate in any second
    assert bucket_capacity(1) == 1


def test_short_token_waits_sleep_and_long_ones_go_back_to_the_queue() -> None:
    budget = task_wait_budget_s(120)
    assert budget == 30
    assert task_wait_budget_s(8) == 2
    assert sleep_for_tokens(0.05, 0.0, budget)
    assert not sleep_for_tokens(5.0, 0.0, budget)  # longer than one sleep
    assert not sleep_for_tokens(1.0, 29.5, budget)  # past the lease's share


def test_a_provider_token_is_reminted_once_per_expired_generation() -> None:
    key = make_apns_key()
    token = ProviderToken(key.key_pem, key.key_id, key.team_id, "app")
    first = token.get_header()
    claims = jwt.decode(first.split()[1], options={"verify_signature": False})
    assert claims["iss"] == key.team_id
    stale = token.generation
    assert token.expire(stale) is True
    assert token.get_header() != first
    # Hundreds of answers about the same old token re-mint it once.
    assert token.expire(stale) is False
    assert (token.remints, token.generation) == (1, stale + 1)


def test_a_refused_fcm_oauth_grant_is_a_configuration_error_not_a_network_one() -> None:
    refused = exceptions.UnknownError("x", cause=RefreshError("invalid_grant: account not found"))
    answer = answer_from_error(refused)
    assert classify("fcm", answer).code == 4
    flaky = exceptions.UnknownError("x", cause=RefreshError("server_error", retryable=True))
    assert classify("fcm", answer_from_error(flaky)).code == -1


# --- payloads: locale fallback, layers, provider mapping, seed dialects (issue 4) -------------


@pytest.mark.parametrize(
    ("keys", "locale", "expect"),
    [
        (["de-DE-bay", "de-DE", "de"], "de-DE-bay", "de-DE-bay"),
        (["de-DE", "de"], "de-DE-bay", "de-DE"),
        (["de"], "de-DE-bay", "de"),
        (["de-DE", "de"], "de-AT", "de"),  # never the sibling de-DE
        (["de-DE"], "de", None),  # never a more specific key
        (["de-CH", "fr"], "de-DE", None),
        (["en_US", "de"], "en-US", "en_US"),  # SEED-NOTES 5: _ and - are one
        (["EN-us"], "en_us", "EN-us"),  # case ignored
        (["en"], "en_US_POSIX", "en"),
        (["de"], None, None),
        ([], "de", None),
    ],
)
def test_pick_locale_follows_the_sap_fallback_chain(
    keys: list[str], locale: str | None, expect: str | None
) -> None:
    assert pick_locale(keys, locale) == expect


_SUBTAGS = st.sampled_from(["de", "DE", "de", "bay", "at", "AT", "en", "US", "us", "fr"])
_SEPARATORS = st.sampled_from(["-", "_"])


@st.composite
def _tags(draw: st.DrawFn) -> str:
    parts = draw(st.lists(_SUBTAGS, min_size=1, max_size=3))
    out = parts[0]
    for part in parts[1:]:
        out += draw(_SEPARATORS) + part
    return out


def _parts(tag: str) -> list[str]:
    return normalise_locale(tag).split("-")


@given(keys=st.lists(_tags(), max_size=6), locale=_tags())
def test_pick_locale_picks_the_longest_prefix_and_never_a_sibling(
    keys: list[str], locale: str
) -> None:
    chosen = pick_locale(keys, locale)
    wanted = _parts(locale)
    prefixes = [k for k in keys if wanted[: len(_parts(k))] == _parts(k)]
    if chosen is None:
        assert prefixes == []  # the default only when no key is a prefix of the locale
        return
    assert chosen in keys
    # A prefix of the device's locale by whole subtags: never a sibling, never more specific.
    assert wanted[: len(_parts(chosen))] == _parts(chosen)
    assert len(_parts(chosen)) == max(len(_parts(k)) for k in prefixes)


@given(keys=st.lists(_tags(), max_size=6), locale=_tags(), upper=st.booleans())
def test_pick_locale_ignores_case_and_separator(keys: list[str], locale: str, upper: bool) -> None:
    respelt = locale.replace("-", "_") if upper else locale.replace("_", "-")
    respelt = respelt.upper() if upper else respelt.lower()
    a, b = pick_locale(keys, locale), pick_locale(keys, respelt)
    assert (a is None) == (b is None)
    if a is not None and b is not None:
        assert normalise_locale(a) == normalise_locale(b)


def test_a_device_uses_its_locale_else_its_first_preferred_language() -> None:
    assert device_locale("de-DE", ["fr"]) == "de-DE"
    assert device_locale(None, ["fr-CA", "en"]) == "fr-CA"
    assert device_locale(None, None) is None


def test_layers_are_localized_before_the_next_is_laid_over() -> None:
    default = {
        "alert": {"body": "generic"},
        "badge": 1,
        "localized": {"de": {"alert": {"body": "allg."}}},
    }
    override = {"alert": {"body": "for you"}, "localized": {"de-DE": {"sound": "de.caf"}}}
    _, fr = device_payload(default, None, "fr")
    assert fr == {"alert": {"body": "generic"}, "badge": 1}
    _, de = device_payload(default, None, "de-AT")
    assert de == {"alert": {"body": "allg."}, "badge": 1}
    # The user's own alert beats the default's German variant; their variant adds a sound.
    key, user_de = device_payload(default, override, "de-DE")
    assert user_de == {"alert": {"body": "for you"}, "badge": 1, "sound": "de.caf"}
    assert key == device_payload(default, override, "de-DE")[0]
    assert key != device_payload(default, override, "de-AT")[0]


def test_a_bulk_override_applies_to_its_user_by_name_or_global_id() -> None:
    target = {
        "type": "bulk",
        "entries": [
            {"user": "ann", "payload": {"alert": {"body": "A"}}},
            {"user_uuid": "g-bob", "payload": {"badge": 0}},
        ],
    }
    base = {"alert": {"body": "all"}}

    def pick(username: str | None, gid: str | None) -> object:
        return choose_payload(
            base,
            target,
            username=username,
            global_user_ids=(gid,) if gid else (),
            locale=None,
            preferred_languages=None,
        )[1]

    assert pick("ann", None) == {"alert": {"body": "A"}}
    assert pick(None, "g-bob") == {"alert": {"body": "all"}, "badge": 0}
    assert pick("carl", "g-carl") == base


def test_every_native_field_maps_onto_apns() -> None:
    payload = {
        "alert": {"title": "T", "subtitle": "S", "body": "B", "loc_key": "K", "loc_args": ["a"]},
        "badge": 0,
        "sound": {"critical": True, "name": "alarm.caf", "volume": 0.5},
        "data": {"n": 1},
        "priority": "high",
        "collapse_id": "c1",
        "thread_id": "th",
        "category": "cat",
        "content_available": True,
        "mutable_content": True,
        "interruption_level": "time-sensitive",
        "relevance_score": 0.7,
        "web_view_url": "https://example.com/w",
        "inbox_topic": "promos",
        "in_app": {"style": "BANNER"},
        "apns": {"custom_values": {"order": "4711"}, "headers": {"apns-collapse-id": "c2"}},
    }
    req = build_apns(payload, 60)
    assert req.body == {
        "n": 1,
        "order": "4711",
        "pushline": {
            "web_view_url": "https://example.com/w",
            "inbox_topic": "promos",
            "in_app": {"style": "BANNER"},
        },
        "aps": {
            "alert": {
                "title": "T",
                "subtitle": "S",
                "body": "B",
                "loc-key": "K",
                "loc-args": ["a"],
            },
            "badge": 0,
            "sound": {"critical": 1, "name": "alarm.caf", "volume": 0.5},
            "category": "cat",
            "thread-id": "th",
            "content-available": 1,
            "mutable-content": 1,
            "interruption-level": "time-sensitive",
            "relevance-score": 0.7,
        },
    }
    assert (req.push_type, req.priority, req.time_to_live, req.collapse_id) == (
        "alert",
        10,
        60,
        "c2",
    )
    assert req.topic_suffix == ""


def test_a_silent_push_keeps_its_alert_for_the_app_and_shows_nothing() -> None:
    payload = {
        "silent": True,
        "alert": {"body": "in-app only"},
        "badge": 3,
        "sound": "x",
        "data": {"k": "v"},
    }
    req = build_apns(payload)
    assert req.body == {
        "k": "v",
        "pushline": {"alert": {"body": "in-app only"}},
        "aps": {"content-available": 1},
    }
    assert (req.push_type, req.priority) == ("background", 5)
    parts = build_fcm(payload)
    assert parts.notification is None and "notification" not in parts.android
    assert parts.data == {"k": "v", "pushline": '{"alert":{"body":"in-app only"}}'}


def test_voip_goes_to_the_voip_topic_and_normal_priority_is_5() -> None:
    voip = build_apns({"push_type": "voip", "data": {"call": "c-1"}})
    assert (voip.push_type, voip.priority, voip.topic_suffix) == ("voip", 10, ".voip")
    assert voip.body == {"call": "c-1", "aps": {}}
    normal = build_apns({"alert": {"body": "b"}, "priority": "normal"})
    assert normal.priority == 5
    forced = build_apns({"data": {"a": 1}, "apns": {"headers": {"apns-priority": "10"}}})
    assert (forced.push_type, forced.priority) == ("background", 5)  # Apple: 5 at most


def test_provider_blocks_replace_common_fields_for_their_provider_only() -> None:
    payload = {
        "alert": {"body": "common"},
        "apns": {"alert": {"body": "for iOS"}, "badge": 2},
        "fcm": {"alert": {"title": "Android", "body": "for Android"}, "ticker": "tick"},
    }
    assert build_apns(payload).body == {"aps": {"alert": {"body": "for iOS"}, "badge": 2}}
    parts = build_fcm(payload)
    assert parts.notification == {"title": "Android", "body": "for Android"}
    assert parts.android["notification"] == {"ticker": "tick"}


def test_every_fcm_option_maps_onto_the_android_block() -> None:
    payload = {
        "alert": {"title": "T", "body": "B"},
        "badge": 4,
        "sound": "ding",
        "image": "https://example.com/i.png",
        "collapse_id": "c",
        "time_to_live": 600,
        "priority": "normal",
        "fcm": {
            "ttl": 300,
            "priority": "high",
            "notification_priority": "max",
            "channel_id": "orders",
            "vibrate": True,
            "vibrate_timings_ms": [0, 200],
            "color": "#112233",
            "icon": "ic",
            "click_action": "OPEN",
            "tag": "t1",
            "ticker": "tick",
        },
    }
    parts = build_fcm(payload, 120)
    assert parts.notification == {"title": "T", "body": "B", "image": "https://example.com/i.png"}
    assert parts.android == {
        "priority": "high",
        "ttl": 120,  # the block's 300, within what is left of the Message's life
        "collapse_key": "c",
        "notification": {
            "channel_id": "orders",
            "sound": "ding",
            "tag": "t1",
            "color": "#112233",
            "icon": "ic",
            "click_action": "OPEN",
            "ticker": "tick",
            "notification_count": 4,
            "priority": "max",
            "vibrate_timings_millis": [0, 200],
            "default_vibrate_timings": True,
        },
    }
    assert (parts.apns_headers, parts.apns_aps) == ({}, {})  # Android: no apns block


def test_an_ios_device_through_fcm_gets_the_apns_block() -> None:
    payload = {
        "alert": {"title": "T", "body": "B"},
        "badge": 1,
        "category": "c",
        "time_to_live": 60,
    }
    parts = build_fcm(payload, 60, ios=True, now_s=1_000)
    assert parts.apns_headers == {
        "apns-push-type": "alert",
        "apns-priority": "10",
        "apns-expiration": "1060",
    }
    assert parts.apns_aps == {"badge": 1, "category": "c"}  # FCM makes the alert itself


def test_the_message_ttl_is_what_is_left_of_its_life() -> None:
    now = datetime(2030, 1, 1, tzinfo=UTC)
    assert message_ttl({"time_to_live": 60}, now + timedelta(seconds=59.5), now) == 60
    assert message_ttl({"time_to_live": 60}, now + timedelta(seconds=10), now) == 10
    assert message_ttl({"time_to_live": 0}, None, now) == 0
    end = (now + timedelta(hours=1)).isoformat()
    assert message_ttl({"expiration": end}, None, now) == 3600
    assert message_ttl({}, None, now) is None


@pytest.mark.parametrize(
    ("payload", "words"),
    [
        ({"alert": "x", "priority": "p" * 129}, "at most 128 characters"),
        ({"alert": "x", "priority": "urgent"}, "'high' or 'normal'"),
        ({"alert": "x", "data": {"aps": 1}}, "reserved"),
        ({"alert": "x", "data": {"google.x": 1}}, "reserved"),
        ({"alert": "x", "time_to_live": 5, "expiration": 4102444800}, "not both"),
        ({"alert": "x", "localized": {"en_US": {}, "en-us": {}}}, "same locale"),
        ({"alert": "x", "localized": {"not a locale": {}}}, "not a locale"),
        ({"sound": {"critical": True, "name": "a", "volume": 2}}, "sound.volume"),
        ({"alert": "x", "in_app": {"style": "banner", "open_title": "Go"}}, "MODAL"),
        ({"alert": "x", "apns": {"headers": {"apns-topic": "x"}}}, "apns-priority"),
        ({"alert": "x", "apns": {"custom_values": '{"aps": 1}'}}, "reserved"),
        ({"alert": {}}, "title, subtitle, body or loc key"),
    ],
)
def test_payload_rules_name_the_field_and_the_limit(payload: dict[str, object], words: str) -> None:
    with pytest.raises(ValidationError, match=re.escape(words)):
        Payload.model_validate(payload)


def test_seed_spellings_are_accepted_where_they_are_documented() -> None:
    p = Payload.model_validate(
        {"alert": "x", "priority": "HIGH", "in_app": {"style": "modal", "open_title": "Go"}}
    )
    assert (p.priority, p.in_app and p.in_app.style) == ("high", "MODAL")
    assert stored(Payload.model_validate({"alert": "x", "data": '{"a": 1}'}))["data"] == {"a": 1}


def test_a_bulk_push_may_leave_the_default_empty_when_every_user_fills_it() -> None:
    empty = Payload.model_validate({})
    target = {"type": "bulk", "entries": [{"user": "u", "payload": {"alert": "hi"}}]}
    assert check_push(empty, target)["entries"][0]["payload"] == {"alert": {"body": "hi"}}
    with pytest.raises(PayloadError, match="at least one of"):
        check_push(empty, {"type": "users", "usernames": ["u"]})
    with pytest.raises(PayloadError) as err:
        check_push(empty, {"type": "bulk", "entries": [{"user": "u", "payload": {"badge": -1}}]})
    assert err.value.field == "target.entries.0.payload.badge"
    with pytest.raises(PayloadError, match="needs one of"):
        check_push(empty, {"type": "bulk", "entries": [{"user": "u", "payload": {}}]})


def test_sap_gcm_block_maps_time_to_live_and_ignores_delay_while_idle() -> None:
    assert gcm_to_fcm({"delayWhileIdle": True, "timeToLive": 123456}) == {"ttl": 123456}
    with pytest.raises(ValueError, match="collapseKey"):
        gcm_to_fcm({"collapseKey": "x"})


def test_backendless_headers_map_per_platform_and_the_rest_is_data() -> None:
    payload = backendless_payload(
        "Hello",
        {
            "ios-alert": "Hi iPhone",
            "ios-badge": "2",
            "ios-sound": "chime.caf",
            "android-ticker-text": "tick",
            "android-content-title": "Title",
            "android-content-text": "Text",
            "order": "17",
        },
    )
    assert payload == {
        "alert": {"body": "Hello"},
        "data": {"order": "17"},
        "apns": {"alert": {"body": "Hi iPhone"}, "badge": 2, "sound": "chime.caf"},
        "fcm": {"alert": {"title": "Title", "body": "Text"}, "ticker": "tick"},
    }
    title_only = backendless_payload("Hello", {"android-content-title": "T"})
    assert title_only["fcm"] == {"alert": {"title": "T", "body": "Hello"}}
    with pytest.raises(ValueError, match="ios-badge"):
        backendless_payload("x", {"ios-badge": "many"})


def test_infobip_mirrored_push_options_become_in_app() -> None:
    payload = infobip_payload(
        "Text",
        {
            "isSilent": True,
            "soundEnabled": False,
            "showMirroredPush": True,
            "mirroredPushStyle": "modal",
            "mirroredPushExpirationPeriod": 2,
            "mirroredPushExpirationTimeUnit": "hours",
            "mirroredPushDismissTitle": "Close",
            "mirroredPushOpenTitle": "Open",
            "webViewUrl": "https://example.com",
            "inboxTopic": "News",
        },
    )
    assert payload == {
        "alert": {"body": "Text"},
        "silent": True,
        "web_view_url": "https://example.com",
        "inbox_topic": "News",
        "in_app": {
            "style": "modal",
            "expires_in_s": 7200,
            "dismiss_title": "Close",
            "open_title": "Open",
        },
        # The device gets the options under Infobip's names, defaults filled in (vibration
        # on); the silent push's text travels for the app to show (`pushline.alert`).
        "app_options": {
            "vibrationEnabled": True,
            "soundEnabled": False,
            "isSilent": True,
            "showMirroredPush": True,
            "mirroredPushStyle": "modal",
            "mirroredPushExpirationPeriod": 2,
            "mirroredPushExpirationTimeUnit": "hours",
            "mirroredPushDismissTitle": "Close",
            "mirroredPushOpenTitle": "Open",
            "webViewUrl": "https://example.com",
            "inboxTopic": "News",
        },
    }
    assert Payload.model_validate(payload).in_app is not None


_BODY_BYTES = st.binary(max_size=64) | st.text(
    alphabet='0123456789eE+-.\\u"dD89aF x', max_size=40
).map(str.encode)


@given(_BODY_BYTES, _BODY_BYTES)
def test_the_cheap_first_look_at_a_body_passes_everything_the_full_pattern_would_catch(
    head: bytes, tail: bytes
) -> None:
    """The guard's first look only spares a plain body the full pattern; it may pass more
    bodies on to it, never fewer."""
    from producer.bodies import _SUSPECT, _suspect

    for raw in (head + tail, head + b"1e308" + tail, head + b"12345678901234567" + tail):
        assert _suspect(raw) == (_SUSPECT.search(raw) is not None)
