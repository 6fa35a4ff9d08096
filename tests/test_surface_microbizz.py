"""Microbizz: the app's Envelope calls register its device (IMEI or phone number, the seed's
`platform:token` form), and Microbizz's pushes reach the app as the seed describes, proven
by what the simulators received and what the rows say."""

from __future__ import annotations

import json
import secrets
from typing import Any

import httpx
import pytest
from sqlmodel import Session, col, select

from producer.apps import create_key
from schemas.db import engine_for
from schemas.microbizz import EXAMPLE_TOKEN
from schemas.tables import Delivery, Registration
from tests.conftest import AppHandle
from tests.test_payloads import alert_headers, apns_seen, fcm_seen

SEED_TOKEN = EXAMPLE_TOKEN.removeprefix("android:")  # the seed's example, split at the first ':'
IMEI = "356938035643809"
PHONE = "+4512345678"


def call(app: AppHandle, path: str, body: Any, key: str | None = None) -> httpx.Response:
    return httpx.post(
        f"{app.stack.api_url}/microbizz/{path}",
        json=body,
        headers={"X-API-Key": key or app.creds.api_key},
        timeout=30,
    )


def envelope(
    imei: str | None, pushtoken: str | None, *commands: dict[str, Any], **more: Any
) -> dict[str, Any]:
    env: dict[str, Any] = {"contract": 1234, "username": "anna", "password": "secret", **more}
    if imei is not None:
        env["imei"] = imei
    if pushtoken is not None:
        env["pushtoken"] = pushtoken
    env["commands"] = list(commands) or [{"command": "GetMobileAppSettings"}]
    return env


def rows(app: AppHandle) -> list[Registration]:
    assert app.stack.database_url
    with Session(engine_for(app.stack.database_url)) as s:
        return list(
            s.exec(select(Registration).where(col(Registration.app_id) == app.creds.app_id))
        )


def deliveries(app: AppHandle, message_id: str) -> list[Delivery]:
    assert app.stack.database_url
    with Session(engine_for(app.stack.database_url)) as s:
        return list(s.exec(select(Delivery).where(col(Delivery.message_id) == message_id)))


def mb_push(app: AppHandle, body: dict[str, Any]) -> list[Delivery]:
    r = call(app, "push", body)
    assert r.status_code == 202, r.text
    answer = r.json()
    assert answer["status"] == 1 and answer["statusurl"] == f"/v1/messages/{answer['messageid']}"
    app.wait(answer["messageid"])
    return deliveries(app, answer["messageid"])


def ios_token() -> str:
    return secrets.token_hex(32)


# --- the Envelope -------------------------------------------------------------------------------


def test_settings_call_with_the_seeds_android_token_registers_the_device(app: AppHandle) -> None:
    r = call(app, "api", envelope(IMEI, EXAMPLE_TOKEN))
    assert r.status_code == 200, r.text
    answer = r.json()
    assert answer["status"] == 1
    assert answer["results"] == [{"status": 1, "settings": {}}]
    [reg] = rows(app)
    assert answer["registration"] == {"id": reg.id, "created": True}
    assert (reg.provider, reg.platform, reg.token) == ("fcm", "android", SEED_TOKEN)
    assert (reg.device_id, reg.username, reg.active) == (IMEI, "anna", True)


def test_same_device_with_a_new_token_or_user_is_updated_never_duplicated(app: AppHandle) -> None:
    first = call(app, "api", envelope(IMEI, EXAMPLE_TOKEN)).json()["registration"]
    new_token = ios_token()
    again = call(app, "api", envelope(IMEI, f"iOS:{new_token}", username="bo")).json()
    assert again["registration"] == {"id": first["id"], "created": False}
    # A call with the IMEI but no token keeps the token and takes the logged-in user.
    third = call(app, "api", envelope(IMEI, None, username="carl")).json()
    assert third["registration"] == {"id": first["id"], "created": False}
    [reg] = rows(app)
    assert (reg.provider, reg.platform, reg.token, reg.username) == (
        "apns",
        "ios",
        new_token,
        "carl",
    )


def test_message_calls_carry_their_own_token_and_the_imei_may_be_a_phone_number(
    app: AppHandle,
) -> None:
    token = ios_token()
    body = envelope(
        PHONE,
        None,
        {
            "command": "GetMessagesByLastChange",
            "changedate": "2024-05-01",
            "changetime": "08:00:00",
            "read": [1, 2],
            "pushtoken": f"iOS:{token}",
        },
        {"command": "GetMBMessagesByLastChange", "pushtoken": f"iOS:{token}"},
    )
    answer = call(app, "api", body).json()
    assert answer["status"] == 1
    assert answer["results"] == [
        {"status": 1, "messages": [], "confirmed": []},
        {"status": 1, "messages": []},
    ]
    [reg] = rows(app)
    assert (reg.device_id, reg.token, reg.provider) == (PHONE, token, "apns")
    # The command's token is more specific than the Envelope's: it wins.
    newer = ios_token()
    body = envelope(
        PHONE,
        f"iOS:{ios_token()}",
        {"command": "GetMBMessagesByLastChange", "pushtoken": f"iOS:{newer}"},
    )
    assert call(app, "api", body).json()["registration"]["id"] == reg.id
    [reg] = rows(app)
    assert reg.token == newer


@pytest.mark.parametrize(
    ("where", "token", "rule"),
    [
        (
            "pushtoken",
            "ePqP4to-no-platform",
            "write the token as 'iOS:<token>' or 'android:<token>'",
        ),
        ("pushtoken", "IOS:" + "ab" * 32, "platform must be written 'iOS', not 'IOS'"),
        (
            "pushtoken",
            "Android:abcdefghijklmnopqrstuvwxyz",
            "platform must be written 'android', not 'Android'",
        ),
        (
            "pushtoken",
            "windows:abcdefghijklmnopqrstuvwxyz",
            "unknown platform 'windows': the token starts with 'iOS:' or 'android:'",
        ),
        ("pushtoken", "iOS:", "the token after 'iOS:' is empty"),
        ("pushtoken", "iOS:not-hex", "an APNs device token is 64 to 200 hexadecimal characters"),
        (
            "commands[0].pushtoken",
            "android",
            "write the token as 'iOS:<token>' or 'android:<token>'",
        ),
    ],
)
def test_bad_push_tokens_are_400_naming_the_field_and_write_nothing(
    app: AppHandle, where: str, token: str, rule: str
) -> None:
    if where == "pushtoken":
        body = envelope(IMEI, token)
    else:
        body = envelope(IMEI, None, {"command": "GetMessagesByLastChange", "pushtoken": token})
    r = call(app, "api", body)
    assert r.status_code == 400
    assert r.json() == {"status": 0, "msg": f"{where}: {rule}", "field": where, "rule": rule}
    assert rows(app) == []


def test_unknown_commands_fail_alone_or_halt_the_rest(app: AppHandle) -> None:
    unknown = {"command": "GetTodos"}
    msg = (
        "unknown command 'GetTodos': Pushline serves GetMobileAppSettings, "
        "GetMessagesByLastChange, GetMBMessagesByLastChange"
    )
    goes_on = call(app, "api", envelope(IMEI, None, unknown, {"command": "GetMobileAppSettings"}))
    assert goes_on.json()["status"] == 0
    assert goes_on.json()["results"] == [{"status": 0, "msg": msg}, {"status": 1, "settings": {}}]
    halts = call(
        app,
        "api",
        envelope(IMEI, None, unknown, {"command": "GetMobileAppSettings"}, haltonerror=1),
    )
    assert halts.json()["results"] == [{"status": 0, "msg": msg}]
    # No token and a device Pushline does not know: nothing to register, not an error.
    assert goes_on.json()["registration"] is None and rows(app) == []


def test_envelope_needs_the_admin_role_and_a_well_formed_body(app: AppHandle) -> None:
    assert app.stack.database_url
    reader, _ = create_key(engine_for(app.stack.database_url), app.creds.app_id, ["push_single"])
    r = call(app, "api", envelope(IMEI, EXAMPLE_TOKEN), key=reader)
    assert r.status_code == 403 and r.json()["status"] == 0
    assert "admin" in r.json()["msg"]
    r = call(app, "api", {"imei": IMEI, "commands": "GetMobileAppSettings"})
    assert r.status_code == 400
    assert r.json()["field"] == "commands"
    assert rows(app) == []


# --- Microbizz's push ---------------------------------------------------------------------------


def register_both(app: AppHandle, user: str = "anna") -> tuple[str, str]:
    """Anna's iPhone (by IMEI) and Android phone (by phone number; an FCM token with a colon
    of its own, shaped like the seed's and new per test, as the simulator counts per token)."""
    apple = ios_token()
    droid = f"{secrets.token_urlsafe(5)}:APA91b{secrets.token_urlsafe(100)}"
    call(app, "api", envelope(IMEI, f"iOS:{apple}", username=user))
    call(app, "api", envelope(PHONE, f"android:{droid}", username=user))
    return apple, droid


def recovered(fcm_data: dict[str, str]) -> dict[str, Any]:
    """What the app does on Android (README): text fields as they are, the rest JSON-parsed."""
    return {
        k: v if k in ("destination", "usertext", "modcode") else json.loads(v)
        for k, v in fcm_data.items()
    }


NOTIFICATION = {
    "title": "Task 99: new note",
    "body": "Bo commented",
    "data": {
        "destination": "notification",
        "vibrate": True,
        "sound": True,
        "userid": 12,
        "usertext": "Bo",
        "modcode": "todo",
        "objid": 99,
        "threadid": 5,
        "messageid": 6,
        "confirmation": 0,
    },
}


def test_notification_to_a_user_reaches_both_devices_with_its_types(app: AppHandle) -> None:
    apple, droid = register_both(app)
    rows_ = mb_push(app, {"user": "anna", **NOTIFICATION})
    assert sorted((d.provider, d.status, d.code) for d in rows_) == [
        ("apns", "SENT", 0),
        ("fcm", "SENT", 0),
    ]
    data = NOTIFICATION["data"]
    assert apns_seen(app, apple) == (
        alert_headers(app),
        {
            **data,
            "aps": {
                "alert": {"title": "Task 99: new note", "body": "Bo commented"},
                "sound": "default",
            },
        },
    )
    message = fcm_seen(app, droid)
    assert message["notification"] == {"title": "Task 99: new note", "body": "Bo commented"}
    assert message["android"] == {
        "priority": "high",
        "notification": {"sound": "default", "default_vibrate_timings": True},
    }
    assert message["data"]["userid"] == "12" and message["data"]["vibrate"] == "true"
    assert recovered(message["data"]) == data


def test_newmessage_to_a_phone_number_device_sounds_only_when_asked(app: AppHandle) -> None:
    _, droid = register_both(app)
    data = {
        "destination": "newmessage",
        "vibrate": False,
        "sound": False,
        "usertext": "Anna",
        "threadid": 4711,
        "messageid": 815,
    }
    [row] = mb_push(app, {"imei": PHONE, "title": "New message from Anna", "data": data})
    assert (row.status, row.code) == ("SENT", 0)
    message = fcm_seen(app, droid)
    assert message["notification"] == {"title": "New message from Anna"}
    assert message["android"] == {
        "priority": "high",
        "notification": {"default_vibrate_timings": False},
    }
    assert recovered(message["data"]) == data


def test_no_destination_is_a_visible_notification_that_vibrates(app: AppHandle) -> None:
    apple, droid = register_both(app)
    data = {"modcode": "customer", "objid": 42, "id": 7, "confirmation": 1}
    body = {"user": "anna", "title": "Please call the office", "body": "About customer 42"}
    mb_push(app, {**body, "data": data})
    headers, seen = apns_seen(app, apple)
    assert headers == alert_headers(app)
    assert seen == {
        **data,
        "aps": {"alert": {"title": body["title"], "body": body["body"]}, "sound": "default"},
    }
    message = fcm_seen(app, droid)
    assert message["notification"] == {"title": body["title"], "body": body["body"]}
    assert message["android"]["notification"] == {"default_vibrate_timings": True}
    assert recovered(message["data"]) == data


def test_sync_with_empty_title_is_silent_and_with_a_title_is_shown(app: AppHandle) -> None:
    apple, droid = register_both(app)
    mb_push(app, {"user": "anna", "title": "", "data": {"destination": "sync"}})
    headers, seen = apns_seen(app, apple)
    assert headers == {
        "apns-push-type": "background",
        "apns-priority": "5",
        "apns-topic": app.creds.apns_topic,
    }
    assert seen == {"destination": "sync", "aps": {"content-available": 1}}
    assert fcm_seen(app, droid) == {
        "token": droid,
        "data": {"destination": "sync"},
        "android": {"priority": "high"},
    }
    other = ios_token()
    call(app, "api", envelope("imei-2", f"iOS:{other}"))
    mb_push(app, {"imei": "imei-2", "title": "Synchronising", "data": {"destination": "sync"}})
    headers, seen = apns_seen(app, other)
    assert headers == alert_headers(app)
    assert seen == {"destination": "sync", "aps": {"alert": {"title": "Synchronising"}}}


def test_push_to_an_unknown_device_ends_with_code_2(app: AppHandle) -> None:
    r = call(app, "push", {"imei": "000000000000000", "data": {"destination": "sync"}})
    assert r.status_code == 202
    status = app.wait(r.json()["messageid"])
    assert (status.state, status.code) == ("failed", 2)


@pytest.mark.parametrize(
    ("body", "field", "rule"),
    [
        (
            {"imei": IMEI, "user": "anna", "title": "t"},
            "imei",
            "give exactly one of imei (a device) or user",
        ),
        ({"title": "t"}, "imei", "give exactly one of imei (a device) or user"),
        (
            {"imei": IMEI, "title": "t", "data": {"vibrate": "yes"}},
            "data.vibrate",
            "Input should be a valid boolean",
        ),
        (
            {"imei": IMEI, "title": "t", "data": {"objid": "42"}},
            "data.objid",
            "Input should be a valid integer",
        ),
        (
            {"imei": IMEI, "title": "t", "data": {"confirmation": 3}},
            "data.confirmation",
            "Input should be 0, 1 or 2",
        ),
        (
            {"imei": IMEI, "title": "t", "data": {"modcode": "invoice"}},
            "data.modcode",
            "Input should be 'todo', 'tools', 'person' or 'customer'",
        ),
        (
            {"imei": IMEI, "title": "t", "data": {"destination": "inbox"}},
            "data.destination",
            "Input should be 'sync', 'notification', 'newmessage' or ''",
        ),
        (
            {"imei": IMEI, "title": "t", "data": {"thread": 5}},
            "data.thread",
            "not a field of Microbizz's push data",
        ),
        (
            {"imei": IMEI, "title": "t", "data": {"destination": "newmessage", "threadid": 5}},
            "data.messageid",
            "required when destination is 'newmessage'",
        ),
        (
            {
                "imei": IMEI,
                "title": "t",
                "data": {"destination": "notification", "modcode": "todo"},
            },
            "data.objid",
            "required when destination is 'notification'",
        ),
        ({"imei": IMEI, "data": {}}, "title", "a shown push needs a title or a body"),
    ],
)
def test_bad_pushes_are_400_naming_the_field(
    app: AppHandle, body: dict[str, Any], field: str, rule: str
) -> None:
    r = call(app, "push", body)
    assert r.status_code == 400
    assert r.json() == {"status": 0, "msg": f"{field}: {rule}", "field": field, "rule": rule}
