"""The REST API: registrations, keys and roles, tenant isolation, and bad input."""

from __future__ import annotations

import secrets
import uuid

import httpx
import pytest

from producer.apps import create_key
from producer.client import PushlineClient
from producer.errors import Forbidden, InvalidRequest, NotFound, Unauthorized
from producer.stack import Stack
from schemas.db import engine_for
from tests.conftest import AppHandle


def raw(app: AppHandle, method: str, path: str, **kw: object) -> httpx.Response:
    headers = {"X-API-Key": app.creds.api_key, **kw.pop("headers", {})}  # type: ignore[dict-item]
    return httpx.request(method, app.stack.api_url + path, headers=headers, **kw)  # type: ignore[arg-type]


def test_registering_twice_with_the_same_device_id_updates_one_registration(app: AppHandle) -> None:
    first = app.client.register(
        {"token": f"iOS:{secrets.token_hex(32)}", "device_id": "imei-1", "username": "ann"}
    )
    new_token = secrets.token_hex(32)
    second = app.client.register(
        {"token": f"iOS:{new_token}", "device_id": "imei-1", "username": "ann", "locale": "de-DE"}
    )
    assert second.id == first.id
    assert (second.token, second.locale) == (new_token, "de-DE")
    assert [r.id for r in app.client.registrations(username="ann").items] == [first.id]


def test_registering_the_same_token_again_is_idempotent(app: AppHandle) -> None:
    token = secrets.token_hex(32)
    a = app.client.register({"token": token, "provider": "apns", "username": "bo"})
    b = app.client.register({"token": token.upper(), "platform": "ios", "username": "bo"})
    assert a.id == b.id and b.token == token


def test_microbizz_tokens_set_provider_and_platform(app: AppHandle) -> None:
    # The seed's own Android token has a second colon: split at the first only.
    reg = app.client.register({"token": "android:ePqP4to:APA91bUoDCXP2yOIjAKsmCpyzXSyTaym9r_P4L"})
    assert (reg.provider, reg.platform, reg.token) == (
        "fcm",
        "android",
        "ePqP4to:APA91bUoDCXP2yOIjAKsmCpyzXSyTaym9r_P4L",
    )
    ios = app.client.register({"token": f"iOS:{'ab' * 32}", "device_id": "+4512345678"})
    assert (ios.provider, ios.platform, ios.device_id) == ("apns", "ios", "+4512345678")


@pytest.mark.parametrize(
    ("body", "field"),
    [
        ({"token": "IOS:" + "ab" * 32}, "token"),  # platform spelled otherwise than the seed
        ({"token": "abc"}, "token"),  # no provider, no platform, no prefix
        ({"token": "zz" * 32, "provider": "apns"}, "token"),  # not hex
        ({"token": "ab" * 32, "provider": "apns", "platform": "android"}, "platform"),
        ({"token": "ab" * 32, "provider": "carrier-pigeon"}, "provider"),
        ({"token": "ab" * 32, "provider": "apns", "colour": "red"}, "colour"),
    ],
)
def test_a_bad_registration_is_a_400_naming_the_field(
    app: AppHandle, body: dict[str, str], field: str
) -> None:
    r = raw(app, "POST", "/v1/registrations", json=body)
    assert r.status_code == 400, r.text
    assert any(d["field"] == field for d in r.json()["details"]), r.json()


def test_registrations_list_by_username_is_paginated(app: AppHandle) -> None:
    ids = {
        app.client.register({"token": f"iOS:{secrets.token_hex(32)}", "username": "pat"}).id
        for _ in range(5)
    }
    seen: list[str] = []
    cursor = None
    while True:
        page = app.client.registrations(username="pat", cursor=cursor, limit=2)
        seen += [r.id for r in page.items]
        if not page.next_cursor:
            break
        cursor = page.next_cursor
    assert sorted(seen) == sorted(ids)


def test_deleting_a_registration_removes_it(app: AppHandle) -> None:
    reg = app.client.register({"token": f"iOS:{secrets.token_hex(32)}"})
    app.client.unregister(reg.id)
    with pytest.raises(NotFound):
        app.client.registration(reg.id)


def test_a_key_of_app_a_can_neither_read_nor_push_to_app_b(stack: Stack) -> None:
    a = AppHandle(stack, stack.add_app(f"a-{uuid.uuid4().hex[:8]}"))
    b = AppHandle(stack, stack.add_app(f"b-{uuid.uuid4().hex[:8]}"))
    b_token = b.ios("shared-name")
    b_reg = b.registration_for(b_token, "shared-name")
    b_msg = b.push_users("shared-name")
    with pytest.raises(NotFound):
        a.client.registration(b_reg)
    with pytest.raises(NotFound):
        a.client.message(b_msg.id)
    with pytest.raises(NotFound):
        a.client.deliveries(b_msg.id)
    assert a.client.registrations(username="shared-name").items == []
    # Pushing with A's key to B's registration id or B's user reaches nobody.
    st = a.wait(
        a.client.push(
            {"target": {"type": "device", "registration_id": b_reg}, "payload": {"alert": "x"}}
        ).id
    )
    assert (st.state, st.code) == ("failed", 2)
    assert a.push_users("shared-name").code == 2
    assert len(stack.apns.requests(b_token)) == 1  # only B's own push


def test_missing_or_unknown_key_is_401_and_a_missing_role_is_403_naming_it(
    stack: Stack, app: AppHandle
) -> None:
    assert httpx.get(f"{stack.api_url}/v1/registrations").status_code == 401
    with pytest.raises(Unauthorized):
        PushlineClient(stack.api_url, "pl_not-a-key").registrations()
    assert stack.database_url
    key, _ = create_key(engine_for(stack.database_url), app.creds.app_id, ["push_single"])
    limited = PushlineClient(stack.api_url, key)
    with pytest.raises(Forbidden, match="push_all"):
        limited.push({"target": {"type": "application"}, "payload": {"alert": "x"}})
    with pytest.raises(Forbidden, match="push_multiple"):
        limited.push({"target": {"type": "users", "usernames": ["a"]}, "payload": {"alert": "x"}})
    with pytest.raises(Forbidden, match="pushregistrations_read"):
        limited.registrations()
    r = httpx.get(f"{stack.api_url}/v1/registrations", headers={"x-api-key": app.creds.api_key})
    assert r.status_code == 200  # header names are case-insensitive


def test_malformed_json_is_a_clean_400(app: AppHandle) -> None:
    r = raw(
        app,
        "POST",
        "/v1/messages",
        content=b'{"target": {"type": "application"},, }',
        headers={"Content-Type": "application/json"},
    )
    assert r.status_code == 400
    assert r.json()["details"][0]["field"] == "body"
    assert "malformed JSON" in r.json()["message"]


@pytest.mark.parametrize(
    ("payload", "field", "words"),
    [
        ({"alert": "x" * 2049}, "payload.alert", "2048"),
        ({"sound": "s" * 257}, "payload.sound", "256"),
        ({"alert": "x", "data": {"k": "v" * 2000}}, "payload.data", "2000"),
        ({"alert": "x", "badge": -1}, "payload.badge", "greater than or equal to 0"),
        ({"alert": "x", "priority": "urgent"}, "payload.priority", "'high' or 'normal'"),
        ({"alert": "x", "collapse_id": "c" * 65}, "payload.collapse_id", "64 bytes"),
        ({"alert": "x", "time_to_live": 2_419_201}, "payload.time_to_live", "2419200"),
        ({"alert": "x", "colour": "red"}, "payload.colour", "Extra inputs"),
        ({}, "payload", "at least one of"),
    ],
)
def test_an_invalid_payload_is_a_400_naming_the_field_and_the_limit(
    app: AppHandle, payload: dict[str, object], field: str, words: str
) -> None:
    r = raw(
        app,
        "POST",
        "/v1/messages",
        json={"target": {"type": "users", "usernames": ["a"]}, "payload": payload},
    )
    assert r.status_code == 400, r.text
    detail = r.json()["details"][0]
    assert detail["field"] == field and words in detail["rule"], detail


def test_a_data_string_is_accepted_as_serialized_json(app: AppHandle) -> None:
    token = app.ios("quin")
    st = app.push_users("quin", alert="x", data='{"a": 1}')
    assert st.by_code == {"0": 1}
    assert app.stack.apns.requests(token)[0]["body"]["a"] == 1


def test_deliveries_page_and_one_delivery_carry_status_code_and_timestamps(app: AppHandle) -> None:
    for _ in range(5):
        app.ios("rob")
    st = app.push_users("rob")
    first = app.client.deliveries(st.id, limit=2)
    assert len(first.items) == 2 and first.next_cursor
    rest = app.client.deliveries(st.id, cursor=first.next_cursor, limit=10)
    assert len(rest.items) == 3 and rest.next_cursor is None
    one = app.client.delivery(first.items[0].id)
    assert one.status == "SENT" and one.sent_at and one.created_at <= one.sent_at
    assert app.client.deliveries(st.id, status="ERROR").items == []


def test_unknown_ids_are_404(app: AppHandle) -> None:
    with pytest.raises(NotFound):
        app.client.message(str(uuid.uuid4()))
    with pytest.raises(NotFound):
        app.client.delivery(str(uuid.uuid4()))


def test_openapi_document_lists_the_native_routes(stack: Stack) -> None:
    paths = httpx.get(f"{stack.api_url}/openapi.json").json()["paths"]
    assert {
        "/v1/messages",
        "/v1/registrations",
        "/v1/messages/{message_id}/deliveries",
        "/v1/deliveries/{delivery_id}",
    } <= set(paths)
    assert httpx.get(f"{stack.api_url}/docs").status_code == 200


def test_client_rejects_bad_input_before_sending(app: AppHandle) -> None:
    with pytest.raises(Exception, match="usernames"):
        app.client.push({"target": {"type": "users"}, "payload": {"alert": "x"}})
    with pytest.raises(InvalidRequest):
        app.client._call(
            "POST", "/v1/messages", json={"target": {"type": "galaxy"}, "payload": {"alert": "x"}}
        )


def test_a_registration_carries_every_targeting_attribute(app: AppHandle) -> None:
    reg = app.client.register(
        {
            "token": f"android:{secrets.token_urlsafe(30)}",
            "device_id": "356938035643809",
            "username": "vera",
            "global_user_id": "uuid-vera",
            "external_user_id": "crm-17",
            "phone_number": "+45 12 34 56 78",
            "email": "Vera@Example.COM",
            "push_group": "field-staff",
            "topics": ["news", "offers", "news"],
            "capabilities": [{"name": "camera", "category": "hw", "value": "12MP"}],
            "locale": "de-DE-bay",
            "preferred_languages": ["de-DE", "en"],
            "time_zone": "Europe/Berlin",
            "form_factor": "tablet",
            "device_model": "Pixel 9",
            "device_manufacturer": "Google",
            "os_version": "15",
            "sdk_version": "3.2.1",
            "app_version": "7.0",
            "device_secure": True,
            "notifications_enabled": False,
            "primary_device": True,
            "custom_attributes": {"tier": "gold", "age": 41},
        }
    )
    assert (reg.phone_number, reg.email, reg.push_group) == (
        "4512345678",
        "vera@example.com",
        "field-staff",
    )
    assert reg.topics == ["news", "offers"]
    assert [c.name for c in reg.capabilities] == ["camera"]
    assert (reg.notifications_enabled, reg.primary_device, reg.device_secure) == (False, True, True)
    assert reg.custom_attributes == {"tier": "gold", "age": 41}
    again = app.client.registration(reg.id)
    assert again.model_dump() == reg.model_dump()


def test_topics_are_subscribed_and_unsubscribed_over_rest(app: AppHandle) -> None:
    reg = app.client.register({"token": f"iOS:{secrets.token_hex(32)}", "topics": ["a"]})
    h = {"X-API-Key": app.creds.api_key}
    url = f"{app.stack.api_url}/v1/registrations/{reg.id}/topics"
    assert httpx.post(url, headers=h, json={"topics": ["b", "a"]}).json()["topics"] == ["a", "b"]
    assert httpx.delete(f"{url}/a", headers=h).json()["topics"] == ["b"]
    assert httpx.post(url, headers=h, json={"topics": []}).status_code == 400


def test_registrations_list_by_push_group(app: AppHandle) -> None:
    group = f"g-{uuid.uuid4().hex[:6]}"
    ids = {
        app.client.register({"token": f"iOS:{secrets.token_hex(32)}", "push_group": group}).id
        for _ in range(3)
    }
    app.client.register({"token": f"iOS:{secrets.token_hex(32)}", "push_group": "other"})
    r = httpx.get(
        f"{app.stack.api_url}/v1/registrations",
        params={"push_group": group},
        headers={"X-API-Key": app.creds.api_key},
    )
    assert {i["id"] for i in r.json()["items"]} == ids


def test_deleting_a_registration_drops_its_topics(app: AppHandle) -> None:
    reg = app.client.register({"token": f"iOS:{secrets.token_hex(32)}", "topics": ["x"]})
    app.client.unregister(reg.id)
    again = app.client.register({"token": f"iOS:{reg.token}"})
    assert again.id != reg.id and again.topics == []
