"""Web Push end to end: REST in, Celery, the sender, the Web Push simulator (which checks
VAPID and DECRYPTS every payload) out; each outcome class recorded as the table says."""

from __future__ import annotations

import json
import time

import httpx
import pytest

from tests.conftest import AppHandle, accepted


def test_web_push_to_a_user_is_sent_once_and_decrypts_to_the_documented_payload(
    any_app: AppHandle,
) -> None:
    endpoint = any_app.web("wanda")
    st = any_app.push_users(
        "wanda",
        alert={"title": "Hello", "body": "World"},
        data={"order": 42},
        collapse_id="order-42",
        image="https://example.com/i.png",
        webpush={
            "icon": "https://example.com/icon.png",
            "badge_icon": "https://example.com/badge.png",
            "actions": [{"action": "open", "title": "Open"}],
            "urgency": "low",
        },
    )
    assert (st.state, st.by_status, st.by_code) == ("done", {"SENT": 1}, {"0": 1})
    [d] = any_app.client.deliveries(st.id).items
    assert (d.status, d.code, d.attempts, d.provider) == ("SENT", 0, 1, "webpush")
    assert d.provider_ref and "/m/" in d.provider_ref  # the push message resource (Location)
    assert accepted(any_app.stack.webpush.stats(), endpoint) == 1
    [req] = any_app.stack.webpush.requests(endpoint)
    # The plaintext the simulator decrypted with the subscription's private key.
    assert req["body"] == {
        "title": "Hello",
        "body": "World",
        "icon": "https://example.com/icon.png",
        "image": "https://example.com/i.png",
        "badge": "https://example.com/badge.png",
        "tag": "order-42",
        "actions": [{"action": "open", "title": "Open"}],
        "data": {"order": 42},
        "notificationId": d.id,
    }
    headers = req["headers"]
    assert (headers["content-encoding"], headers["urgency"], headers["topic"]) == (
        "aes128gcm",
        "low",
        "order-42",
    )
    assert int(headers["ttl"]) > 0
    assert headers["authorization"] == "<redacted>"


def test_a_registration_reports_provider_webpush_platform_web_and_its_keys(
    app: AppHandle,
) -> None:
    endpoint = app.web("xena")
    reg = app.client.registration(app.registration_for(endpoint, "xena"))
    assert (reg.provider, reg.platform, reg.token) == ("webpush", "web", endpoint)
    assert reg.webpush_p256dh and reg.webpush_auth


def test_a_silent_web_push_carries_data_and_no_title(app: AppHandle) -> None:
    endpoint = app.web("yuri")
    st = app.push_users("yuri", silent=True, data={"sync": "now"})
    [d] = app.client.deliveries(st.id).items
    [req] = app.stack.webpush.requests(endpoint)
    assert req["body"] == {"silent": True, "data": {"sync": "now"}, "notificationId": d.id}


def test_gone_gives_code_7_deactivates_and_is_never_sent_again(any_app: AppHandle) -> None:
    endpoint = any_app.web("zack")
    any_app.stack.webpush.unsubscribe_webpush(endpoint)  # the browser dropped it: 410
    st = any_app.push_users("zack")
    assert (st.by_status, st.by_code) == ({"ERROR": 1}, {"7": 1})
    reg = any_app.client.registration(any_app.registration_for(endpoint, "zack"))
    assert (reg.active, reg.deactivated_code) == (False, 7)
    again = any_app.push_users("zack")
    assert (again.state, again.code, again.total) == ("failed", 2, 0)
    assert any_app.stack.webpush.stats()["rejected"].get("Gone", 0) >= 1


def test_404_not_found_gives_code_7_and_deactivates(app: AppHandle) -> None:
    endpoint = app.web("abe")
    app.stack.webpush.script(token=endpoint, then="NotFound")
    st = app.push_users("abe")
    assert st.by_code == {"7": 1}
    assert app.client.registration(app.registration_for(endpoint, "abe")).active is False


@pytest.mark.parametrize(
    ("reason", "code"),
    [("BadRequest", 1), ("Unauthorized", 4), ("Forbidden", 4), ("PayloadTooLarge", 9)],
)
def test_final_error_answers_map_through_the_table(app: AppHandle, reason: str, code: int) -> None:
    endpoint = app.web(f"u-{reason}")
    app.stack.webpush.script(token=endpoint, then=reason)
    st = app.push_users(f"u-{reason}")
    [d] = app.client.deliveries(st.id).items
    assert (d.status, d.code, d.attempts) == ("ERROR", code, 1)
    assert d.provider_message and d.provider_message.startswith(
        "The payload was rejected by Web Push"
    )
    assert app.client.registration(app.registration_for(endpoint, f"u-{reason}")).active is True


def test_a_vapid_key_other_than_the_subscriptions_is_refused_403_code_4(app: AppHandle) -> None:
    # A subscription made for another application server key: the push service says 403.
    other = app.stack.add_app(f"other-{time.monotonic_ns()}")
    sub = app.stack.webpush.subscribe_webpush(other.webpush_public_key)
    app.client.register({"token": sub["endpoint"], "keys": sub["keys"], "username": "bea"})
    st = app.push_users("bea")
    [d] = app.client.deliveries(st.id).items
    assert (d.status, d.code) == ("ERROR", 4)
    assert app.stack.webpush.stats()["rejected"].get("Forbidden", 0) >= 1


def test_payload_too_large_once_encrypted_is_code_9_without_a_request(app: AppHandle) -> None:
    endpoint = app.web("cal")
    # Within the API's limits, over 4096 bytes once encoded and encrypted (é is 2 bytes).
    st = app.push_users("cal", alert={"body": "é" * 2040}, data={"pad": "x" * 1900})
    assert st.by_code == {"9": 1}
    assert app.stack.webpush.requests(endpoint) == []


def test_429_is_retried_after_its_retry_after_and_then_sent(app: AppHandle) -> None:
    endpoint = app.web("dee")
    app.stack.webpush.script(token=endpoint, responses=["TooManyRequests"])
    app.stack.webpush.configure(retry_after=1)
    try:
        st = app.push_users("dee")
    finally:
        app.stack.webpush.configure(retry_after=None)
    [d] = app.client.deliveries(st.id).items
    assert (d.status, d.code, d.attempts) == ("SENT", 0, 2)
    outcomes = [r["outcome"] for r in app.stack.webpush.requests(endpoint)]
    assert outcomes == ["TooManyRequests", "accepted"]


def test_5xx_is_retried_and_ends_in_12_after_the_attempt_limit(app: AppHandle) -> None:
    endpoint = app.web("eve")
    app.stack.webpush.script(token=endpoint, then="ServiceUnavailable")
    st = app.push_users("eve")
    [d] = app.client.deliveries(st.id).items
    assert (d.status, d.code, d.attempts) == ("ERROR", 12, 5)
    assert len(app.stack.webpush.requests(endpoint)) == 5


def test_refused_connections_stay_queued_with_code_minus_1_then_are_sent(app: AppHandle) -> None:
    endpoint = app.web("fay")
    sim = app.stack.webpush
    sim.refuse_tls(True)
    try:
        message = app.client.push(
            {"target": {"type": "users", "usernames": ["fay"]}, "payload": {"alert": "hi"}}
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
    assert accepted(sim.stats(), endpoint) == 1


def test_a_broadcast_over_every_provider_reaches_each_device_exactly_once(app: AppHandle) -> None:
    ios = [app.ios(f"i{i}") for i in range(4)]
    android = [app.android(f"a{i}") for i in range(4)]
    web = [app.web(f"w{i}") for i in range(4)]
    st = app.wait(
        app.client.push({"target": {"type": "application"}, "payload": {"alert": "to all"}}).id
    )
    assert (st.total, st.by_status) == (12, {"SENT": 12})
    apns, fcm, webpush = app.stack.apns.stats(), app.stack.fcm.stats(), app.stack.webpush.stats()
    assert [accepted(apns, t) for t in ios] == [1] * 4
    assert [accepted(fcm, t) for t in android] == [1] * 4
    assert [accepted(webpush, t) for t in web] == [1] * 4
    for endpoint in web:
        [req] = app.stack.webpush.requests(endpoint)
        assert req["body"]["body"] == "to all"


def test_the_public_key_route_serves_the_apps_vapid_key_without_an_api_key(
    app: AppHandle,
) -> None:
    url = f"{app.stack.api_url}/v1/apps/{app.creds.app_id}/webpush/public-key"
    got = httpx.get(url).json()
    assert got == {"app_id": app.creds.app_id, "public_key": app.creds.webpush_public_key}
    missing = httpx.get(f"{app.stack.api_url}/v1/apps/no-such-app/webpush/public-key")
    assert missing.status_code == 404 and missing.json()["error"] == "not_found"


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"keys": {"p256dh": "AAAA", "auth": "x"}}, "keys.p256dh"),
        ({"keys": {"auth": "short"}}, "keys.auth"),
        ({"token": "http://push.example.com/x"}, "token"),
        ({"keys": None}, "keys"),
        ({"token": None}, "token"),  # keys without the endpoint they belong to
        ({"platform": "ios"}, "platform"),
    ],
)
def test_a_bad_subscription_is_refused_naming_the_field(
    app: AppHandle, change: dict[str, object], field: str
) -> None:
    sub = app.stack.webpush.subscribe_webpush(app.creds.webpush_public_key)
    body: dict[str, object] = {
        "token": sub["endpoint"],
        "keys": dict(sub["keys"]),
        "provider": "webpush",
    }
    for key, value in change.items():
        if key == "keys" and isinstance(value, dict):
            body["keys"] = {**sub["keys"], **value}
        elif value is None:
            body.pop(key)
        else:
            body[key] = value
    resp = httpx.post(
        f"{app.stack.api_url}/v1/registrations",
        json=body,
        headers={"X-API-Key": app.creds.api_key},
    )
    assert resp.status_code == 400, resp.text
    assert resp.json()["details"][0]["field"] == field


def test_a_browser_registers_through_sap_w3cpushapi_and_gets_the_push(app: AppHandle) -> None:
    api = f"{app.stack.api_url}/mobileservices/push/v1/runtime/applications/any"
    headers = {"X-API-Key": app.creds.api_key}
    push_id = httpx.get(f"{api}/pushconfiguration/os/w3cpushapi/pushid", headers=headers)
    assert push_id.json() == {"pushId": app.creds.webpush_public_key}
    sub = app.stack.webpush.subscribe_webpush(push_id.json()["pushId"])
    body = {"pushToken": json.dumps(sub), "username": "gus", "formFactor": "browser"}
    resp = httpx.put(f"{api}/os/w3cpushapi/devices/browser-1", json=body, headers=headers)
    assert resp.status_code == 201, resp.text
    assert (resp.json()["pushProvider"], resp.json()["device"]) == ("w3cpushapi", "browser-1")
    again = httpx.put(f"{api}/os/w3cpushapi/devices/browser-1", json=body, headers=headers)
    assert again.status_code == 200  # idempotent on the device id
    st = app.push_users("gus", alert={"title": "SAP", "body": "to the browser"})
    [d] = app.client.deliveries(st.id).items
    [req] = app.stack.webpush.requests(sub["endpoint"])
    assert req["body"] == {"title": "SAP", "body": "to the browser", "notificationId": d.id}


def test_a_browser_registered_through_sap_before_it_subscribes_gets_a_device_id_and_code_5(
    app: AppHandle,
) -> None:
    api = f"{app.stack.api_url}/mobileservices/push/v1/runtime/applications/any"
    headers = {"X-API-Key": app.creds.api_key}
    first = httpx.post(f"{api}/os/w3cpushapi/devices", json={"username": "hal"}, headers=headers)
    assert first.status_code == 201, first.text
    device = first.json()["device"]
    assert device and first.json()["pushProvider"] == "w3cpushapi"
    st = app.push_users("hal")
    assert (st.by_status, st.by_code) == ({"ERROR": 1}, {"5": 1})  # push token missing
    sub = app.stack.webpush.subscribe_webpush(app.creds.webpush_public_key)
    body = {"pushToken": sub, "username": "hal"}  # the object itself, not its JSON text
    then = httpx.put(f"{api}/os/w3cpushapi/devices/{device}", json=body, headers=headers)
    assert (then.status_code, then.json()["id"]) == (200, first.json()["id"]), then.text
    st = app.push_users("hal", alert={"title": "now", "body": "subscribed"})
    [d] = app.client.deliveries(st.id).items
    assert (d.status, d.code) == ("SENT", 0)
    [req] = app.stack.webpush.requests(sub["endpoint"])
    assert req["body"] == {"title": "now", "body": "subscribed", "notificationId": d.id}


BAD_KEYS = {"endpoint": "https://x.example/1", "keys": {"p256dh": "B", "auth": "a"}}


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("os/windows/devices/d1", {"pushToken": "x"}, "os"),
        ("os/ios/devices/d1", {"pushToken": {"endpoint": "https://x.example/1"}}, "pushToken"),
        ("os/w3cpushapi/devices/d1", {"pushToken": BAD_KEYS}, "pushToken.keys.p256dh"),
        ("os/w3cpushapi/devices/d1", {"pushToken": "not json"}, "pushToken"),
        (
            "os/w3cpushapi/devices/d1",
            {"pushToken": {"endpoint": "https://x.example/1"}},
            "pushToken.keys",
        ),
        ("os/w3cpushapi/devices/d1", {"pushToken": "{}", "colour": "red"}, "colour"),
    ],
)
def test_a_bad_sap_registration_is_refused_naming_the_sap_field(
    app: AppHandle, path: str, body: dict[str, object], field: str
) -> None:
    api = f"{app.stack.api_url}/mobileservices/push/v1/runtime/applications/any"
    resp = httpx.put(f"{api}/{path}", json=body, headers={"X-API-Key": app.creds.api_key})
    assert resp.status_code == 400, resp.text
    assert resp.json()["details"][0]["field"] == field
