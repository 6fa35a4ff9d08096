"""The pure decisions: result-code mapping, backoff, payload building, token rules."""

from __future__ import annotations

import json
import re

import pytest
from hypothesis import given
from hypothesis import strategies as st

from producer.errors import InvalidRequest
from producer.registrations import normalise_token
from schemas.codes import DeliveryStatus
from worker.backoff import RETRY_RULES, exhausted_code, retry_delay
from worker.outcomes import ProviderAnswer, classify
from worker.payloads import apns_too_large, build_apns, build_fcm, fcm_data_value


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
    assert set(RETRY_RULES) == {-1, 8, 11, 14}


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
