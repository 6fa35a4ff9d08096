"""The SAP Mobile Services surface: every example request of the seed, sent as written to
the running stack, and the answers SAP users rely on (pushResults, HTTP statuses, the
notification status, registrations, authentication, roles, quota)."""

from __future__ import annotations

import base64
import json
import secrets
import time
import uuid
from typing import Any

import httpx
import pytest

from producer.apps import create_key
from schemas.db import engine_for
from schemas.sap import EXAMPLE_BULK, EXAMPLE_CAPABILITY, EXAMPLE_DEVICE, push_http_status
from tests.conftest import AppHandle
from tests.test_payloads import SAP_CAPABILITY_REGISTRATION

BASE = "/mobileservices/push"
APP = "any"  # the seed's PUSH_APP: not checked against the key (SEED-NOTES 4)
SEED_USERS_CURL = (
    '{"users":["user1"],"userUUIDs":["userUUIDs1"],"notification" : {"notification":'
    '{"alert":"Hello!"},"notifications":{"en_US":{"alert":"Howdie!"},"de":{"alert":"Guten Tag!"}}}}'
)
SEED_TOPIC_CURL = (
    '{"users":["user1"],"userUUIDs":["userUUIDs1"],"topics":["topic1"],"notification":'
    '{"notification":{"alert":"Hello!"},"notifications":{"en_US":{"alert":"Howdie!"},'
    '"de":{"alert":"Guten Tag!"}}}}'
)
# The seed's curl.exe topic example, `,,` and all (SEED-NOTES 3).
SEED_TOPIC_CURL_EXE = SEED_TOPIC_CURL.replace('["userUUIDs1"],', '["userUUIDs1"],,')


_warm: set[str] = set()


def warm(app: AppHandle) -> None:
    """One push through a fresh stack before the first measured one: the workers' first
    task (connections, imports) may take longer than the routes wait."""
    if app.stack.api_url in _warm:
        return
    other = AppHandle(app.stack, app.stack.add_app(f"warm-{uuid.uuid4().hex[:8]}"))
    other.ios("warm")
    other.push_users("warm")
    _warm.add(app.stack.api_url)


def call(
    app: AppHandle,
    method: str,
    path: str,
    body: Any = None,
    *,
    raw: str | None = None,
    key: str | None = None,
    headers: dict[str, str] | None = None,
) -> httpx.Response:
    """One request to the SAP surface, with the seed's headers (X-API-Key by default)."""
    warm(app)
    sent = {"content-type": "application/json", "accept": "application/json"}
    if headers is None:
        sent["X-API-Key"] = key or app.creds.api_key
    else:
        sent.update(headers)
    content = raw if raw is not None else (None if body is None else json.dumps(body))
    with httpx.Client(base_url=app.stack.api_url, timeout=30) as http:
        return http.request(method, BASE + path, content=content, headers=sent)


def push_to_user(app: AppHandle, name: str) -> httpx.Response:
    """The seed's v2 users route with a minimal notification."""
    return call(
        app,
        "POST",
        f"/v2/backend/applications/{APP}/notifications/users",
        {"users": [name], "notification": {"notification": {"alert": "hi"}}},
    )


def ios(app: AppHandle, **fields: Any) -> tuple[str, str]:
    token = secrets.token_hex(32)
    return token, app.client.register({"token": f"iOS:{token}", **fields}).id


def android(app: AppHandle, **fields: Any) -> tuple[str, str]:
    token = f"fcm-{secrets.token_urlsafe(24)}:APA91b"
    return token, app.client.register({"token": f"android:{token}", **fields}).id


def results(r: httpx.Response) -> dict[str, dict[str, Any]]:
    """pushResults by target (registration id), after checking each against its Delivery."""
    body = r.json()
    assert body["status"] is None
    out = {}
    for res in body["pushResults"]:
        assert set(res) == {"target", "notificationId", "code", "message"}
        out[res["target"]] = res
    return out


def assert_matches_deliveries(app: AppHandle, found: dict[str, dict[str, Any]]) -> None:
    for reg_id, res in found.items():
        d = app.client.delivery(res["notificationId"])
        assert d.registration_id == reg_id
        assert d.code == res["code"]


def apns_alert(app: AppHandle, token: str) -> Any:
    [req] = app.stack.apns.requests(token)
    return req["body"]["aps"]["alert"]["body"]


def fcm_alert(app: AppHandle, token: str) -> Any:
    [req] = app.stack.fcm.requests(token)
    return req["body"]["message"]["notification"]["body"]


def key_for(app: AppHandle, roles: list[str], **kw: Any) -> str:
    assert app.stack.database_url
    key, _ = create_key(engine_for(app.stack.database_url), app.creds.app_id, roles, **kw)
    return key


def user() -> str:
    return f"user-{uuid.uuid4().hex[:8]}"


# --- the seed's example requests --------------------------------------------------------------


def test_push_to_device_seed_example_is_sent_and_answered_with_its_delivery(
    any_app: AppHandle,
) -> None:
    token, reg = ios(any_app, username="user1", device_id="dev-1")
    r = call(
        any_app,
        "POST",
        f"/v1/backend/applications/{APP}/users/user1/devices/dev-1/notifications",
        EXAMPLE_DEVICE,
    )
    assert r.status_code == 200, r.text
    found = results(r)
    assert list(found) == [reg]
    assert (found[reg]["code"], found[reg]["message"]) == (0, "success")
    assert_matches_deliveries(any_app, found)
    [req] = any_app.stack.apns.requests(token)
    assert req["body"] == {
        "order": "4711-2314",
        "aps": {
            "alert": {"body": "Hello World"},
            "sound": "default",
            "category": "immediate-action",
        },
        # The notificationId the answer gave, so the app can report its status.
        "notificationId": found[reg]["notificationId"],
    }


def test_push_to_device_curl_path_form_is_served_identically(app: AppHandle) -> None:
    token, reg = android(app, username="user1", device_id="dev-a")
    other, _ = android(app, username="user1", device_id="dev-b")
    r = call(
        app,
        "POST",
        f"/v1/backend/applications/{APP}/notifications/users/user1/devices/dev-a/notifications",
        raw='{"alert" : "Hello World"}',
    )
    assert r.status_code == 200, r.text
    assert [res["code"] for res in results(r).values()] == [0]
    assert fcm_alert(app, token) == "Hello World"
    assert app.stack.fcm.requests(other) == []


def test_push_to_users_seed_example_picks_each_device_locale(app: AppHandle) -> None:
    en_us, a = ios(app, username="user1", locale="en-US")
    de_ch, b = android(app, global_user_id="userUUIDs1", locale="de-CH")
    fr, c = ios(app, username="user1", locale="fr")
    r = call(
        app, "POST", f"/v2/backend/applications/{APP}/notifications/users", raw=SEED_USERS_CURL
    )
    assert r.status_code == 200, r.text
    found = results(r)
    assert {k: v["code"] for k, v in found.items()} == {a: 0, b: 0, c: 0}
    assert_matches_deliveries(app, found)
    assert (apns_alert(app, en_us), fcm_alert(app, de_ch), apns_alert(app, fr)) == (
        "Howdie!",
        "Guten Tag!",
        "Hello!",
    )


def test_bulk_push_seed_example_sends_the_user_alert_to_user_and_global_id(app: AppHandle) -> None:
    by_name, a = ios(app, username="user1")
    by_uuid, b = android(app, global_user_id="global-user-id")
    unlisted, _ = ios(app, username="user2")
    r = call(app, "POST", f"/v2/backend/applications/{APP}/notifications/bulk", EXAMPLE_BULK)
    assert r.status_code == 200, r.text
    assert {k: v["code"] for k, v in results(r).items()} == {a: 0, b: 0}
    assert (apns_alert(app, by_name), fcm_alert(app, by_uuid)) == ("user alert", "user alert")
    assert app.stack.apns.requests(unlisted) == []


def test_push_to_application_seed_example_reaches_every_registration(app: AppHandle) -> None:
    apple, a = ios(app, username=user())
    droid, b = android(app)
    r = call(
        app,
        "POST",
        f"/v1/backend/applications/{APP}/notifications",
        raw='{"alert" : "Hello World"}',
    )
    assert r.status_code == 200, r.text
    assert {k: v["code"] for k, v in results(r).items()} == {a: 0, b: 0}
    assert (apns_alert(app, apple), fcm_alert(app, droid)) == ("Hello World", "Hello World")


def test_push_to_topic_seed_example_reaches_the_listed_users_subscribers_once(
    app: AppHandle,
) -> None:
    both, a = ios(app, username="user1", topics=["topic1", "topic2"], locale="de")
    not_subscribed, _ = ios(app, username="user1", topics=["other"])
    other_user, _ = ios(app, username="user9", topics=["topic1"])
    r = call(
        app, "POST", f"/v2/backend/applications/{APP}/topics/notifications", raw=SEED_TOPIC_CURL
    )
    assert r.status_code == 200, r.text
    assert {k: v["code"] for k, v in results(r).items()} == {a: 0}
    assert apns_alert(app, both) == "Guten Tag!"
    assert app.stack.apns.requests(not_subscribed) == app.stack.apns.requests(other_user) == []


def test_curl_exe_topic_example_with_double_comma_is_a_clean_400_and_sends_nothing(
    app: AppHandle,
) -> None:
    token, _ = ios(app, username="user1", topics=["topic1"])
    r = call(
        app, "POST", f"/v2/backend/applications/{APP}/topics/notifications", raw=SEED_TOPIC_CURL_EXE
    )
    assert r.status_code == 400
    body = r.json()
    assert (body["status"], body["error"]) == (400, "Bad Request")
    assert body["details"][0]["field"] == "body"
    assert "malformed JSON" in body["message"]
    time.sleep(0.3)  # anything wrongly queued would have reached the simulator by now
    assert app.stack.apns.requests(token) == []


def test_push_to_group_seed_example_with_literal_application_id(app: AppHandle) -> None:
    member, a = ios(app, push_group="all")
    outsider, _ = ios(app, push_group="admin")
    r = call(
        app,
        "POST",
        "/v1/backend/applications/applicationId/groups/all/notifications",
        raw='{"alert":"Hello World"}',
    )
    assert r.status_code == 200, r.text
    assert {k: v["code"] for k, v in results(r).items()} == {a: 0}
    assert apns_alert(app, member) == "Hello World"
    assert app.stack.apns.requests(outsider) == []


def test_push_to_capability_seed_example_matches_name_user_and_form_factor(
    app: AppHandle,
) -> None:
    seed_registration = SAP_CAPABILITY_REGISTRATION
    phone, a = ios(app, **seed_registration)
    tablet, _ = ios(app, **{**seed_registration, "form_factor": "tablet"})
    r = call(app, "POST", "/v1/backend/capabilities/capability1/notifications", EXAMPLE_CAPABILITY)
    assert r.status_code == 200, r.text
    assert {k: v["code"] for k, v in results(r).items()} == {a: 0}
    assert apns_alert(app, phone) == "Hello World"
    assert app.stack.apns.requests(tablet) == []


def test_seed_response_example_mixed_outcome_is_200_with_code_10_and_0(app: AppHandle) -> None:
    name = user()
    wrong_topic, a = ios(app, username=name)
    fine, b = ios(app, username=name)
    app.stack.apns.script(token=wrong_topic, then="DeviceTokenNotForTopic")
    r = push_to_user(app, name)
    assert r.status_code == 200, r.text
    found = results(r)
    assert found[a]["code"] == 10
    assert found[a]["message"] == "The payload was rejected by APNs: DeviceTokenNotForTopic"
    assert (found[b]["code"], found[b]["message"]) == (0, "success")
    assert_matches_deliveries(app, found)


# --- HTTP statuses ----------------------------------------------------------------------------


def test_every_target_rejected_is_422_with_the_codes(app: AppHandle) -> None:
    name = user()
    token, reg = ios(app, username=name)
    app.stack.apns.script(token=token, then="BadDeviceToken")
    r = push_to_user(app, name)
    assert r.status_code == 422, r.text
    assert results(r)[reg]["code"] == 6
    assert_matches_deliveries(app, results(r))


def test_no_registration_matched_is_404_in_the_sap_error_shape(app: AppHandle) -> None:
    r = call(
        app,
        "POST",
        f"/v1/backend/applications/{APP}/users/nobody/devices/none/notifications",
        {"alert": "Hello World"},
    )
    assert r.status_code == 404
    body = r.json()
    assert (body["status"], body["error"]) == (404, "Not Found")
    assert "no device registration" in body["message"]


def test_push_to_device_still_queued_at_the_deadline_is_202_then_sent(app: AppHandle) -> None:
    token, reg = ios(app, username="slow", device_id="dev-slow")
    app.stack.apns.configure(latency_ms=6000)  # longer than the route waits (sap_wait_s)
    try:
        r = call(
            app,
            "POST",
            f"/v1/backend/applications/{APP}/users/slow/devices/dev-slow/notifications",
            {"alert": "Hello World"},
        )
    finally:
        app.stack.apns.configure(latency_ms=0)
    assert r.status_code == 202, r.text
    [res] = results(r).values()
    assert (res["target"], res["code"]) == (reg, -1)
    deadline = time.monotonic() + 30
    while app.client.delivery(res["notificationId"]).status == "QUEUED":
        assert time.monotonic() < deadline
        time.sleep(0.1)
    status = call(app, "GET", f"/v2/backend/notifications/{res['notificationId']}/status").json()
    assert status["statusDetails"]["status"] == "SENT"
    assert len(app.stack.apns.requests(token)) == 1


def test_flat_body_on_a_v2_route_is_400_naming_notification_notification(app: AppHandle) -> None:
    for body in ({"users": ["user1"], "notification": {"alert": "Hello"}}, {"alert": "Hello"}):
        r = call(app, "POST", f"/v2/backend/applications/{APP}/notifications/users", body)
        assert r.status_code == 400
        assert r.json()["details"][0]["field"] == "notification.notification"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        ("/v1/backend/applications/a/notifications", {"alert": "x" * 2049}, "alert"),
        ("/v1/backend/applications/a/notifications", {"alert": "x", "sound": "s" * 257}, "sound"),
        (
            "/v1/backend/applications/a/notifications",
            {"alert": "x", "priority": "p" * 129},
            "priority",
        ),
        (
            "/v1/backend/applications/a/notifications",
            {"alert": "x", "gcm": {"collapseKey": "k"}},
            "gcm",
        ),
        (
            "/v2/backend/applications/a/topics/notifications",
            {"notification": {"notification": {"alert": "x"}}},
            "topics",
        ),
        (
            "/v2/backend/applications/a/notifications/users",
            {
                "users": ["u"],
                "notification": {
                    "notification": {"alert": "x"},
                    "notifications": {"de": {"alert": "y" * 2049}},
                },
            },
            "notification.notifications.de.alert",
        ),
    ],
    ids=["alert", "sound", "priority", "gcm", "topics", "locale-variant"],
)
def test_invalid_payloads_are_400_naming_the_sap_field(
    app: AppHandle, path: str, body: dict[str, Any], field: str
) -> None:
    r = call(app, "POST", path, body)
    assert r.status_code == 400, r.text
    assert r.json()["details"][0]["field"] == field


def test_http_status_decision_follows_the_seed_table() -> None:
    assert push_http_status("users", True, {}) == 404
    assert push_http_status("users", False, {("SENT", 0): 1, ("ERROR", 6): 1}) == 200
    assert push_http_status("users", False, {("QUEUED", 11): 2}) == 200
    assert push_http_status("device", False, {("QUEUED", 11): 1}) == 202
    assert push_http_status("device", False, {("QUEUED", None): 1}) == 202
    assert push_http_status("users", False, {("ERROR", 6): 1, ("ERROR", 10): 2}) == 422
    assert push_http_status("users", False, {("ERROR", 12): 1, ("ERROR", 6): 1}) == 200


# --- notification status and what the app reports ---------------------------------------------


def test_status_route_shows_app_reports_and_never_moves_backwards(app: AppHandle) -> None:
    _, _ = ios(app, username="eve", device_id="dev-eve")
    r = call(
        app,
        "POST",
        f"/v1/backend/applications/{APP}/users/eve/devices/dev-eve/notifications",
        {"alert": "Hello World"},
    )
    [res] = results(r).values()
    nid = res["notificationId"]
    # The seed's curl.exe status call sends no Accept header (SEED-NOTES 13).
    st = call(
        app,
        "GET",
        f"/v2/backend/notifications/{nid}/status",
        headers={"X-API-Key": app.creds.api_key},
    )
    assert st.status_code == 200
    delivery = app.client.delivery(nid)
    assert st.json() == {
        "status": {"code": 0, "notification": None, "parameters": None},
        "statusDetails": {
            "notificationId": nid,
            "providerReference": delivery.provider_ref,
            "applicationId": None,
            "notificationType": "ios",
            "status": "SENT",
            "statusInfo": None,
            "caller": "push",
        },
    }
    runtime = f"/v1/runtime/applications/{APP}/notifications/{nid}/status"
    seen = []
    for reported in ("RECEIVED", "CONSUMED", "RECEIVED", "CONFIRMED", "CONSUMED"):
        rep = call(app, "PUT", runtime, {"status": reported})
        assert rep.status_code == 200, rep.text
        seen.append(rep.json()["statusDetails"]["status"])
    assert seen == ["RECEIVED", "CONSUMED", "CONSUMED", "CONFIRMED", "CONFIRMED"]
    final = call(app, "GET", f"/v2/backend/notifications/{nid}/status").json()
    assert final["statusDetails"]["status"] == "CONFIRMED"
    bad = call(app, "POST", runtime, {"status": "SENT"})
    assert (bad.status_code, bad.json()["details"][0]["field"]) == (400, "status")


def test_reporting_on_a_rejected_notification_is_409(app: AppHandle) -> None:
    name = user()
    token, _ = ios(app, username=name)
    app.stack.apns.script(token=token, then="BadDeviceToken")
    r = push_to_user(app, name)
    [res] = results(r).values()
    rep = call(
        app,
        "PUT",
        f"/v1/runtime/applications/{APP}/notifications/{res['notificationId']}/status",
        {"status": "RECEIVED"},
    )
    assert rep.status_code == 409
    st = call(app, "GET", f"/v2/backend/notifications/{res['notificationId']}/status").json()
    assert (st["status"]["code"], st["statusDetails"]["status"]) == (6, "ERROR")
    assert st["statusDetails"]["statusInfo"] == "The payload was rejected by APNs: BadDeviceToken"


# --- registrations ----------------------------------------------------------------------------


def test_registrations_by_id_username_and_push_group_in_pages(app: AppHandle) -> None:
    name = user()
    _, first = android(
        app,
        username=name,
        device_id="7027c327e3e51945",
        device_model="Android",
        form_factor="tablet",
        push_group="all",
        locale="en",
    )
    _, second = ios(app, username=name, push_group="admin", locale="fr")
    one = call(app, "GET", f"/v2/backend/registrations/{first}")
    assert one.json() == {
        "id": first,
        "device": "7027c327e3e51945",
        "deviceModel": "Android",
        "formFactor": "tablet",
        "pushGroup": "all",
        "pushProvider": "android",
        "userLocale": "en",
        "username": name,
    }
    by_user = call(app, "GET", f"/v2/backend/registrations?username={name}").json()
    assert sorted(r["id"] for r in by_user["value"]) == sorted([first, second])
    assert "@odata.nextLink" not in by_user
    by_group = call(app, "GET", "/v2/backend/registrations?pushGroup=admin").json()
    assert [r["id"] for r in by_group["value"]] == [second]
    page = call(app, "GET", f"/v2/backend/registrations?username={name}&$top=1").json()
    assert len(page["value"]) == 1
    with httpx.Client(timeout=30) as http:
        rest = http.get(page["@odata.nextLink"], headers={"X-API-Key": app.creds.api_key}).json()
    assert {page["value"][0]["id"], rest["value"][0]["id"]} == {first, second}
    assert "@odata.nextLink" not in rest


# --- authentication, roles, tenancy, quota ------------------------------------------------------


def test_basic_auth_with_alias_and_key_and_any_header_case(app: AppHandle) -> None:
    key = key_for(app, ["pushregistrations_read"], alias="myAlias")
    _, reg = ios(app)
    path = f"/v2/backend/registrations/{reg}"

    def basic(alias: str) -> dict[str, str]:
        return {"Authorization": "Basic " + base64.b64encode(f"{alias}:{key}".encode()).decode()}

    assert call(app, "GET", path, headers=basic("myAlias")).status_code == 200
    assert call(app, "GET", path, headers={"X-API-KEY": key}).status_code == 200
    wrong = call(app, "GET", path, headers=basic("otherAlias"))
    assert (wrong.status_code, wrong.json()["status"]) == (401, 401)
    assert call(app, "GET", path, headers={}).status_code == 401
    assert call(app, "GET", path, headers={"X-API-Key": "pl_not-a-key"}).status_code == 401


def test_missing_role_is_403_naming_it(app: AppHandle) -> None:
    single = key_for(app, ["push_single"])
    cases = [
        (f"/v2/backend/applications/{APP}/notifications/users", SEED_USERS_CURL, "push_multiple"),
        (f"/v1/backend/applications/{APP}/notifications", '{"alert":"x"}', "push_all"),
        (
            "/v1/backend/capabilities/c/notifications",
            '{"notification":{"alert":"x"}}',
            "push_multiple",
        ),
    ]
    for path, raw, role in cases:
        r = call(app, "POST", path, raw=raw, key=single)
        assert r.status_code == 403
        assert role in r.json()["message"]
    reg = call(app, "GET", "/v2/backend/registrations", key=single)
    assert reg.status_code == 403 and "pushregistrations_read" in reg.json()["message"]


def test_another_apps_notification_and_registration_are_404(app: AppHandle) -> None:
    _, reg = ios(app, username="zed", device_id="dev-zed")
    r = call(
        app,
        "POST",
        f"/v1/backend/applications/{APP}/users/zed/devices/dev-zed/notifications",
        {"alert": "Hello World"},
    )
    [res] = results(r).values()
    other = app.stack.add_app(f"t-{uuid.uuid4().hex[:12]}").api_key
    status = call(
        app, "GET", f"/v2/backend/notifications/{res['notificationId']}/status", key=other
    )
    assert status.status_code == 404
    assert call(app, "GET", f"/v2/backend/registrations/{reg}", key=other).status_code == 404
    report = call(
        app,
        "PUT",
        f"/v1/runtime/applications/{APP}/notifications/{res['notificationId']}/status",
        {"status": "RECEIVED"},
        key=other,
    )
    assert report.status_code == 404
    # Another app's key pushing to the same user and device reaches nothing of this app.
    miss = call(
        app,
        "POST",
        f"/v1/backend/applications/{APP}/users/zed/devices/dev-zed/notifications",
        {"alert": "Hello World"},
        key=other,
    )
    assert miss.status_code == 404


def test_a_key_over_its_request_quota_is_429_with_retry_after(app: AppHandle) -> None:
    key = key_for(app, ["pushregistrations_read"], requests_per_minute=2)
    answers = [call(app, "GET", "/v2/backend/registrations", key=key) for _ in range(5)]
    assert answers[0].status_code == 200
    limited = [a for a in answers if a.status_code == 429]
    assert limited, [a.status_code for a in answers]  # 2 a minute: 5 calls cross it
    assert int(limited[0].headers["Retry-After"]) >= 1
    assert limited[0].json()["status"] == 429
