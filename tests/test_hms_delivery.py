"""Huawei Push Kit end to end: REST in, Celery, the sender, the Push Kit simulator out
(OAuth token, message checks); each outcome class recorded as the table says."""

from __future__ import annotations

import json
import time
from typing import Any

import httpx
import pytest

from producer.apps import create_app, create_key
from producer.stack import Credentials, Stack
from schemas.db import engine_for
from tests.conftest import AppHandle, accepted


def test_a_push_to_a_huawei_phone_is_sent_once_in_push_kits_format(any_app: AppHandle) -> None:
    token = any_app.huawei("hana")
    st = any_app.push_users(
        "hana",
        alert={"title": "Hello", "body": "World"},
        data={"order": 42},
        collapse_id="order-42",
        priority="normal",
        time_to_live=600,
        hms={"channel_id": "orders", "category": "EXPRESS"},
    )
    assert (st.state, st.by_status, st.by_code) == ("done", {"SENT": 1}, {"0": 1})
    [d] = any_app.client.deliveries(st.id).items
    assert (d.status, d.code, d.attempts, d.provider) == ("SENT", 0, 1, "hms")
    assert d.provider_ref  # Push Kit's requestId
    assert accepted(any_app.stack.hms.stats(), token) == 1
    [req] = any_app.stack.hms.requests(token)
    assert req["body"]["validate_only"] is False
    message = req["body"]["message"]
    assert message["token"] == [token]
    assert json.loads(message["data"]) == {"order": 42, "notificationId": d.id}
    android = message["android"]
    assert (android["urgency"], android["category"]) == ("NORMAL", "EXPRESS")
    assert 0 < int(android["ttl"].removesuffix("s")) <= 600
    assert android["notification"] == {
        "title": "Hello",
        "body": "World",
        "channel_id": "orders",
        "tag": "order-42",
        "click_action": {"type": 3},
    }


def test_a_registration_reports_provider_hms_platform_android(app: AppHandle) -> None:
    token = app.huawei("ivan")
    reg = app.client.registration(app.registration_for(token, "ivan"))
    assert (reg.provider, reg.platform, reg.token) == ("hms", "android", token)


def test_a_silent_push_is_a_data_message_without_a_notification(app: AppHandle) -> None:
    token = app.huawei("jill")
    st = app.push_users("jill", silent=True, data={"sync": "now"})
    [d] = app.client.deliveries(st.id).items
    [req] = app.stack.hms.requests(token)
    message = req["body"]["message"]
    assert "notification" not in message["android"]
    assert json.loads(message["data"]) == {"sync": "now", "notificationId": d.id}


def test_an_invalid_token_gives_code_7_deactivates_and_is_never_sent_again(
    any_app: AppHandle,
) -> None:
    token = any_app.huawei("kim")
    any_app.stack.hms.script(token=token, then="INVALID_TOKEN")  # 80300007: uninstalled
    st = any_app.push_users("kim")
    assert (st.by_status, st.by_code) == ({"ERROR": 1}, {"7": 1})
    reg = any_app.client.registration(any_app.registration_for(token, "kim"))
    assert (reg.active, reg.deactivated_code) == (False, 7)
    again = any_app.push_users("kim")
    assert (again.state, again.code, again.total) == ("failed", 2, 0)
    assert len(any_app.stack.hms.requests(token)) == 1


@pytest.mark.parametrize(
    ("reason", "code"),
    [
        ("MESSAGE_STRUCTURE_ERROR", 1),
        ("NO_PERMISSION", 4),
        ("MESSAGE_TOO_BIG", 9),
        ("SENSITIVE_CONTENT", 10),
    ],
)
def test_final_error_answers_map_through_the_table(app: AppHandle, reason: str, code: int) -> None:
    token = app.huawei(f"u-{reason}")
    app.stack.hms.script(token=token, then=reason)
    st = app.push_users(f"u-{reason}")
    [d] = app.client.deliveries(st.id).items
    assert (d.status, d.code, d.attempts) == ("ERROR", code, 1)
    assert d.provider_message and d.provider_message.startswith(
        "The payload was rejected by Huawei Push Kit"
    )
    assert app.client.registration(app.registration_for(token, f"u-{reason}")).active is True


def test_payload_too_large_is_code_9_without_a_request(app: AppHandle) -> None:
    token = app.huawei("lou")
    # Within the API's limits, over Push Kit's 4096 bytes as sent (é is 2 bytes).
    st = app.push_users("lou", alert={"body": "é" * 1000}, data={"pad": "x" * 1900})
    assert st.by_code == {"9": 1}
    assert app.stack.hms.requests(token) == []


def test_flow_control_is_retried_with_backoff_and_then_sent(app: AppHandle) -> None:
    token = app.huawei("max")
    app.stack.hms.script(token=token, responses=["FLOW_CONTROL", "TOO_MANY_REQUESTS"])
    st = app.push_users("max")
    [d] = app.client.deliveries(st.id).items
    assert (d.status, d.code, d.attempts) == ("SENT", 0, 3)
    outcomes = [r["outcome"] for r in app.stack.hms.requests(token)]
    assert outcomes == ["FLOW_CONTROL", "TOO_MANY_REQUESTS", "accepted"]


def test_an_internal_error_is_retried_and_ends_in_12_after_the_attempt_limit(
    app: AppHandle,
) -> None:
    token = app.huawei("ned")
    app.stack.hms.script(token=token, then="INTERNAL_ERROR")
    st = app.push_users("ned")
    [d] = app.client.deliveries(st.id).items
    assert (d.status, d.code, d.attempts) == ("ERROR", 12, 5)
    assert len(app.stack.hms.requests(token)) == 5


def test_an_expired_access_token_is_refreshed_within_the_same_attempt(app: AppHandle) -> None:
    first = app.huawei("ola")
    assert app.push_users("ola").by_code == {"0": 1}  # the worker holds a token now
    app.stack.hms.expire_hms_tokens()
    second = app.huawei("ola")
    st = app.push_users("ola")
    assert (st.by_status, st.by_code) == ({"SENT": 2}, {"0": 2})
    assert {d.attempts for d in app.client.deliveries(st.id).items} == {1}
    assert (accepted(app.stack.hms.stats(), first), accepted(app.stack.hms.stats(), second)) == (
        2,
        1,
    )


def test_refused_connections_stay_queued_with_code_minus_1_then_are_sent(app: AppHandle) -> None:
    token = app.huawei("pia")
    sim = app.stack.hms
    sim.refuse_tls(True)
    try:
        message = app.client.push(
            {"target": {"type": "users", "usernames": ["pia"]}, "payload": {"alert": "hi"}}
        ).id
        deadline = time.monotonic() + 30
        while True:
            [d] = app.client.deliveries(message).items
            if d.attempts >= 1 and d.code == -1:
                break
            assert time.monotonic() < deadline, d
            time.sleep(0.05)
        assert d.status == "QUEUED"
    finally:
        sim.refuse_tls(False)
    st = app.wait(message)
    [d] = app.client.deliveries(st.id).items
    assert (d.status, d.code) == ("SENT", 0) and d.attempts >= 2
    assert accepted(sim.stats(), token) == 1


def test_a_broadcast_over_all_four_providers_reaches_each_device_exactly_once(
    app: AppHandle,
) -> None:
    ios = [app.ios(f"i{i}") for i in range(4)]
    android = [app.android(f"a{i}") for i in range(4)]
    web = [app.web(f"w{i}") for i in range(4)]
    huawei = [app.huawei(f"h{i}") for i in range(4)]
    st = app.wait(
        app.client.push({"target": {"type": "application"}, "payload": {"alert": "to all"}}).id
    )
    assert (st.total, st.by_status) == (16, {"SENT": 16})
    stack = app.stack
    apns, fcm, webpush, hms = (s.stats() for s in (stack.apns, stack.fcm, stack.webpush, stack.hms))
    assert [accepted(apns, t) for t in ios] == [1] * 4
    assert [accepted(fcm, t) for t in android] == [1] * 4
    assert [accepted(webpush, t) for t in web] == [1] * 4
    assert [accepted(hms, t) for t in huawei] == [1] * 4
    for token in huawei:
        [req] = stack.hms.requests(token)
        assert req["body"]["message"]["android"]["notification"]["body"] == "to all"


def _target(kind: str, reg_id: str) -> dict[str, Any]:
    return {
        "device": {"type": "device", "registration_id": reg_id},
        "users": {"type": "users", "usernames": ["quinn"]},
        "topic": {"type": "topic", "topics": ["news"]},
        "group": {"type": "group", "push_group": "beta"},
        "capability": {"type": "capability", "capability": "nfc"},
        "os_mask": {"type": "os_mask", "mask": 2},  # Backendless ANDROID
        "device_ids": {"type": "device_ids", "device_ids": ["huawei-p60"]},
    }[kind]


@pytest.mark.parametrize(
    "kind", ["device", "users", "topic", "group", "capability", "os_mask", "device_ids"]
)
def test_every_target_kind_reaches_a_huawei_phone(app: AppHandle, kind: str) -> None:
    token = app.huawei(
        "quinn",
        device_id="huawei-p60",
        push_group="beta",
        topics=["news"],
        capabilities=[{"name": "nfc"}],
    )
    reg_id = app.registration_for(token, "quinn")
    body = {"target": _target(kind, reg_id), "payload": {"alert": {"body": kind}}}
    st = app.wait(app.client.push(body).id)
    assert (st.total, st.by_status) == (1, {"SENT": 1})
    assert accepted(app.stack.hms.stats(), token) == 1


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"platform": "ios"}, "platform"),
        ({"token": "short"}, "token"),
        ({"token": "has spaces in it, twenty+ characters"}, "token"),
        ({"keys": {"p256dh": "x", "auth": "y"}}, "keys"),
    ],
)
def test_a_bad_huawei_registration_is_refused_naming_the_field(
    app: AppHandle, change: dict[str, object], field: str
) -> None:
    body: dict[str, object] = {"token": "IQAAAACy" + "a" * 40, "provider": "hms", **change}
    resp = httpx.post(
        f"{app.stack.api_url}/v1/registrations",
        json=body,
        headers={"X-API-Key": app.creds.api_key},
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["details"][0]["field"] == field


def test_the_admin_api_checks_huawei_credentials_and_never_returns_the_secret(
    app: AppHandle,
) -> None:
    api = httpx.Client(
        base_url=app.stack.api_url, headers={"X-API-Key": app.creds.api_key}, timeout=30
    )
    base = f"/v1/apps/{app.creds.app_id}"
    assert api.get(base).json()["hms"] == {"app_id": app.creds.hms_app_id}
    wrong = api.patch(base, json={"hms": {"app_id": "123456", "client_secret": "guess"}})
    assert wrong.status_code == 400 and wrong.json()["details"][0]["field"] == "hms"
    letters = api.patch(base, json={"hms": {"app_id": "abc", "client_secret": "s"}})
    assert letters.status_code == 400
    assert letters.json()["details"][0]["field"] == "hms.app_id"
    app.stack.hms.register_hms_app("987654321", "new-secret")
    moved = api.patch(base, json={"hms": {"app_id": "987654321", "client_secret": "new-secret"}})
    assert moved.status_code == 200 and moved.json()["hms"] == {"app_id": "987654321"}
    assert "new-secret" not in moved.text
    # The worker picks the new credentials up: the simulator takes a token only for the app
    # id in the send's path, so this is sent as app 987654321.
    token = app.huawei("rex")
    st = app.push_users("rex")
    assert st.by_code == {"0": 1}
    assert accepted(app.stack.hms.stats(), token) == 1


def test_an_app_without_huawei_credentials_ends_its_huawei_deliveries_with_code_4(
    stack: Stack,
) -> None:
    assert stack.database_url
    engine = engine_for(stack.database_url)
    bare = create_app(engine, f"no-hms-{time.monotonic_ns()}")
    key, _ = create_key(engine, bare.id, ["admin", "push_multiple"])
    handle = AppHandle(stack, Credentials(bare.id, key, "", ""))
    token = handle.huawei("sid")
    st = handle.push_users("sid")
    [d] = handle.client.deliveries(st.id).items
    assert (d.status, d.code) == ("ERROR", 4)
    assert "Huawei Push Kit app id" in (d.provider_message or "")
    assert handle.client.registration(handle.registration_for(token, "sid")).active is True
    assert stack.hms.requests(token) == []
