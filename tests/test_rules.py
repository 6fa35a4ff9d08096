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

from producer.errors import InvalidRequest
from producer.registrations import normalise_token
from schemas.codes import DeliveryStatus
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
from worker.payloads import apns_too_large, build_apns, build_fcm, fcm_data_value
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
