"""SAP registration semantics: one user on one device, a generated device id, the Global
User ID history, registrations without a token (code 5) through the native and the SAP
routes, the alert in FCM's data, and codes 8 / 14 named while they are retried."""

from __future__ import annotations

import secrets
import uuid
from pathlib import Path
from typing import Any

import httpx
from alembic import command
from sqlalchemy import text

from schemas.db import alembic_config, engine_for, upgrade
from tests.conftest import AppHandle
from tests.test_surface_sap import APP, call, results, user

DEVICES = f"/v1/runtime/applications/{APP}/os"


def sap_register(
    app: AppHandle, os: str, body: dict[str, Any], device: str | None = None, method: str = "PUT"
) -> httpx.Response:
    path = f"{DEVICES}/{os}/devices" + (f"/{device}" if device else "")
    return call(app, "POST" if device is None else method, path, body)


def push_to_device(
    app: AppHandle, username: str, device: str, alert: str = "Hello World"
) -> httpx.Response:
    path = f"/v1/backend/applications/{APP}/users/{username}/devices/{device}/notifications"
    return call(app, "POST", path, {"alert": alert})


def push_users(
    app: AppHandle, *, users: tuple[str, ...] = (), uuids: tuple[str, ...] = ()
) -> httpx.Response:
    body = {
        "users": list(users),
        "userUUIDs": list(uuids),
        "notification": {"notification": {"alert": "hi"}},
    }
    return call(app, "POST", f"/v2/backend/applications/{APP}/notifications/users", body)


def fcm_token() -> str:
    return f"fcm-{secrets.token_urlsafe(24)}:APA91b"


def test_two_users_on_one_shared_device_are_two_registrations(app: AppHandle) -> None:
    device, token = f"shared-{uuid.uuid4().hex[:6]}", secrets.token_hex(32)
    alice, bob = user(), user()
    a = sap_register(app, "ios", {"pushToken": token, "username": alice}, device)
    b = sap_register(app, "ios", {"pushToken": token, "username": bob}, device)
    assert (a.status_code, b.status_code) == (201, 201), b.text
    assert a.json()["id"] != b.json()["id"]
    assert (b.json()["device"], b.json()["username"], b.json()["pushProvider"]) == (
        device,
        bob,
        "ios",
    )
    # Registering Bob again updates his registration only.
    again = sap_register(
        app, "ios", {"pushToken": token, "username": bob, "userLocale": "de"}, device
    )
    assert (again.status_code, again.json()["id"], again.json()["userLocale"]) == (
        200,
        b.json()["id"],
        "de",
    )
    r = push_to_device(app, bob, device)
    assert r.status_code == 200, r.text
    [res] = results(r).values()
    assert (res["target"], res["code"]) == (b.json()["id"], 0)
    assert len(app.stack.apns.requests(token)) == 1
    # The native route follows the same rule.
    c = app.client.register({"token": f"iOS:{token}", "username": user(), "device_id": device})
    assert c.id not in (a.json()["id"], b.json()["id"])
    assert {app.client.registration(i).token for i in (a.json()["id"], c.id)} == {token}


def test_a_registration_without_device_id_is_given_one_for_the_device_route(app: AppHandle) -> None:
    name, token = user(), fcm_token()
    r = sap_register(app, "android", {"pushToken": token, "username": name})
    assert r.status_code == 201, r.text
    device = r.json()["device"]
    uuid.UUID(device)
    pushed = push_to_device(app, name, device)
    assert pushed.status_code == 200, pushed.text
    assert [res["code"] for res in results(pushed).values()] == [0]
    assert len(app.stack.fcm.requests(token)) == 1
    native = app.client.register({"token": f"android:{fcm_token()}", "username": name})
    uuid.UUID(native.device_id or "")
    assert native.device_id != device


def test_an_old_global_user_id_still_reaches_the_registration(app: AppHandle) -> None:
    name, token, device = user(), secrets.token_hex(32), uuid.uuid4().hex
    old, new = f"guid-{uuid.uuid4().hex[:8]}", f"guid-{uuid.uuid4().hex[:8]}"
    first = sap_register(
        app, "ios", {"pushToken": token, "username": name, "userUUID": old}, device
    )
    second = sap_register(
        app, "ios", {"pushToken": token, "username": name, "userUUID": new}, device
    )
    assert first.json()["id"] == second.json()["id"]
    assert app.client.registration(first.json()["id"]).global_user_id == new
    for guid in (old, new):
        r = push_users(app, uuids=(guid,))
        assert r.status_code == 200, r.text
        assert [(t, res["code"]) for t, res in results(r).items()] == [(first.json()["id"], 0)]
    # A bulk entry naming the old id: the device gets that entry's notification, not an
    # empty one (the override must be chosen by the registration's whole history).
    bulk = {
        "userNotifications": [
            {"userUUID": old, "notification": {"notification": {"alert": "for the old id"}}}
        ]
    }
    r = call(app, "POST", f"/v2/backend/applications/{APP}/notifications/bulk", bulk)
    assert [res["code"] for res in results(r).values()] == [0]
    received = app.stack.apns.requests(token)
    assert len(received) == 3
    assert received[-1]["body"]["aps"]["alert"] == {"body": "for the old id"}


def test_registrations_without_a_token_end_with_code_5_until_one_arrives(app: AppHandle) -> None:
    name = user()
    native = app.client.register({"platform": "ios", "username": name, "device_id": "no-token-1"})
    assert (native.token, native.provider) == (None, "apns")
    sap = sap_register(app, "android", {"username": name, "formFactor": "phone"}, "no-token-2")
    assert sap.status_code == 201, sap.text
    r = push_users(app, users=(name,))
    assert r.status_code == 422, r.text
    found = results(r)
    assert {t: res["code"] for t, res in found.items()} == {native.id: 5, sap.json()["id"]: 5}
    assert {res["message"] for res in found.values()} == {"push token missing"}
    # The device sends its token later: the same registration, now reachable.
    token = fcm_token()
    later = sap_register(app, "android", {"pushToken": token, "username": name}, "no-token-2")
    assert (later.status_code, later.json()["id"]) == (200, sap.json()["id"])
    assert push_to_device(app, name, "no-token-2").json()["pushResults"][0]["code"] == 0
    assert len(app.stack.fcm.requests(token)) == 1


def test_bad_registrations_are_400_naming_the_sap_field(app: AppHandle) -> None:
    cases = [
        ("windows", {"pushToken": "ab" * 32}, "os"),
        ("ios", {"pushToken": "not-a-token"}, "pushToken"),
        ("ios", {"pushToken": "ab" * 32, "colour": "red"}, "colour"),
        (
            "ios",
            {"pushToken": "ab" * 32, "capabilities": [{"category": "push"}]},
            "capabilities.0.name",
        ),
    ]
    for os, body, field in cases:
        r = sap_register(app, os, body, "bad-1")
        assert r.status_code == 400, r.text
        assert r.json()["details"][0]["field"] == field
    assert app.client.registrations(limit=10).items == []
    r = httpx.post(
        app.stack.api_url + "/v1/registrations",
        json={"username": "x"},
        headers={"X-API-Key": app.creds.api_key},
    )
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "token"


def test_fcm_data_carries_the_alert_on_android(app: AppHandle) -> None:
    name, token = user(), fcm_token()
    sap_register(app, "android", {"pushToken": token, "username": name}, "droid-1")
    r = push_to_device(app, name, "droid-1", alert="Hello World")
    assert r.status_code == 200, r.text
    [req] = app.stack.fcm.requests(token)
    message = req["body"]["message"]
    assert message["notification"] == {"body": "Hello World"}
    assert message["data"]["alert"] == "Hello World"


def sap_status(app: AppHandle, notification: str) -> tuple[str, int]:
    doc = call(app, "GET", f"/v2/backend/notifications/{notification}/status").json()
    return doc["statusDetails"]["status"], doc["status"]["code"]


def test_retried_too_many_requests_and_quota_are_reported_as_8_and_14(app: AppHandle) -> None:
    name = user()
    apple, droid = secrets.token_hex(32), fcm_token()
    ios_reg = sap_register(app, "ios", {"pushToken": apple, "username": name}, "busy-ios")
    sap_register(app, "android", {"pushToken": droid, "username": name}, "busy-droid")
    app.stack.apns.script(token=apple, then="TooManyRequests")
    app.stack.fcm.script(token=droid, then="QUOTA_EXCEEDED")
    try:
        r = push_users(app, users=(name,))
        assert r.status_code == 200, r.text
        found = results(r)
        # FCM's quota pauses the app's FCM lane for a minute: still queued, named 14.
        [fcm_result] = [res for t, res in found.items() if t != ios_reg.json()["id"]]
        assert fcm_result["code"] == 14
        assert sap_status(app, fcm_result["notificationId"]) == ("QUEUED", 14)
        assert found[ios_reg.json()["id"]]["code"] == 8
        # APNs' TooManyRequests is retried with a growing delay: while it is, the status
        # route names 8 (never the generic 11), from the first answer on.
        message = app.client.push(
            {"target": {"type": "users", "usernames": [name]}, "payload": {"alert": "again"}}
        )
        [delivery] = [d for d in app.client.deliveries(message.id).items if d.provider == "apns"]
        seen: set[tuple[str, int]] = set()
        while ("QUEUED", 8) not in seen:
            now = sap_status(app, delivery.id)
            assert now in {("QUEUED", -1), ("QUEUED", 8)}, now
            seen.add(now)
    finally:
        app.stack.apns.script(token=apple)
        app.stack.fcm.script(token=droid)


def test_migration_keeps_topics_and_starts_the_global_user_history_on_sqlite(
    tmp_path: Path,
) -> None:
    url = f"sqlite:///{tmp_path / 'old.db'}"
    upgrade(url, "0005")
    engine = engine_for(url)
    with engine.begin() as conn:
        conn.execute(
            text(
                "INSERT INTO app (id, name, apns_sandbox, created_at, updated_at)"
                " VALUES ('a', 'a', false, '2026-01-01', '2026-01-01')"
            )
        )
        conn.execute(
            text(
                "INSERT INTO registration (id, app_id, provider, token, platform, global_user_id,"
                " notifications_enabled, primary_device, active, created_at, updated_at) VALUES"
                " ('r', 'a', 'fcm', 't', 'android', 'g1', true, false, true, '2026-01-01',"
                " '2026-01-01')"
            )
        )
        conn.execute(text("INSERT INTO registration_topic VALUES ('r', 'news', 'a')"))
    engine.dispose()
    upgrade(url)
    with engine.begin() as conn:
        assert conn.execute(text("SELECT topic FROM registration_topic")).scalars().all() == [
            "news"
        ]
        assert conn.execute(
            text("SELECT global_user_id FROM registration_global_user")
        ).scalars().all() == ["g1"]
    # The downgrade restores the unique token and keeps the topics too.
    command.downgrade(alembic_config(url), "0005")
    with engine.begin() as conn:
        assert conn.execute(text("SELECT topic FROM registration_topic")).scalars().all() == [
            "news"
        ]
