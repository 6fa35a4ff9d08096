"""What a careless or hostile client sends: every route answers a 4xx in its surface's own
error shape (never a 5xx, never FastAPI's `{"detail": …}`), names the field and the rule,
and writes nothing."""

from __future__ import annotations

import json
import socket
import uuid
from collections.abc import Callable
from typing import Any

import httpx
import pytest
from sqlalchemy import func, select
from sqlmodel import Session, col

from schemas.db import engine_for
from schemas.tables import Message, Registration
from tests.conftest import AppHandle

Shape = Callable[[dict[str, Any]], str]  # the field an error names, from its body

NUL_RULE = "must not contain the NUL character (U+0000)"
SAP = "/mobileservices/push"
SAP_USERS = f"{SAP}/v2/backend/applications/x/notifications/users"


def native(body: dict[str, Any]) -> str:
    assert set(body) <= {"error", "message", "details", "code"} and "detail" not in body, body
    return str(body["details"][0]["field"])


def sap(body: dict[str, Any]) -> str:
    assert set(body) == {"status", "error", "message", "details"}, body
    return str(body["details"][0]["field"])


def infobip(body: dict[str, Any]) -> str:
    assert set(body) == {"requestError"}, body
    service = body["requestError"]["serviceException"]
    return str(next(iter(service["validationErrors"])))


def backendless(body: dict[str, Any]) -> str:
    assert set(body) == {"message", "code"}, body  # exactly these two, always
    return str(body["message"].split(":")[0])


def _bl(app: AppHandle, rest: str) -> str:
    return f"/{app.creds.app_id}/{app.creds.api_key}/messaging/{rest}"


def _call(
    app: AppHandle,
    method: str,
    path: str,
    body: Any = None,
    *,
    content: bytes | None = None,
    content_type: str | None = "application/json",
) -> httpx.Response:
    headers = {"X-API-Key": app.creds.api_key}
    if content_type is not None:
        headers["Content-Type"] = content_type
    if body is not None:
        content = json.dumps(body).encode()
    url = f"{app.stack.api_url}{path}"
    return httpx.request(method, url, headers=headers, content=content, timeout=30)


def _counts(app: AppHandle) -> tuple[int, int]:
    """The app's Messages and Registrations, straight from the store."""
    assert app.stack.database_url
    with Session(engine_for(app.stack.database_url)) as s:
        messages = s.execute(
            select(func.count()).where(col(Message.app_id) == app.creds.app_id)
        ).scalar_one()
        regs = s.execute(
            select(func.count()).where(col(Registration.app_id) == app.creds.app_id)
        ).scalar_one()
    return int(messages), int(regs)


PUSH = {"target": {"type": "users", "usernames": ["u1"]}, "payload": {"alert": "hi"}}
INFOBIP_SEND = {
    "from": "APP",
    "destinations": [{"type": "EXTERNAL_USER_ID", "externalUserId": "u1"}],
    "text": "hi",
}
CM_EVENT = {
    "from": {"number": "0b3fbd4a9e2e4d0e8f8e3c3b7f4f1a2b"},
    "to": {"number": "6a1f3c2e-0d4b-4c8e-9a7f-2b5e8c1d3f40"},
    "event": {"type": "ClientInstalled", "custom": {"deviceOs": "Android"}},
    "channel": "MobilePush",
}
SAP_PUSH = {"users": ["u1"], "notification": {"notification": {"alert": "hi"}}}

# (method, path, surface): a route that takes a JSON body on each surface.
BODY_ROUTES: list[tuple[str, str, Shape]] = [
    ("POST", "/v1/messages", native),
    ("POST", "/v1/registrations", native),
    ("POST", "/push/2/message/single", infobip),
    ("POST", SAP_USERS, sap),
    ("POST", "/cm/events", native),
    ("POST", "BL:news", backendless),
    ("POST", "BL:registrations", backendless),
]


def _path(app: AppHandle, path: str) -> str:
    return _bl(app, path.removeprefix("BL:")) if path.startswith("BL:") else path


@pytest.mark.parametrize(
    ("path", "field", "shape"),
    [
        ("/v1/messages/%00", "message_id", native),
        ("/v1/registrations?username=a%00b", "username", native),
        ("/v1/messages/x/deliveries?status=%00", "status", native),
        ("/push/1/reports?bulkId=%00", "bulkId", infobip),
        (f"{SAP}/v2/backend/registrations/a%00", "registrationId", sap),
        (f"{SAP}/v2/backend/registrations?pushGroup=%00", "pushGroup", sap),
        ("BL:x%00", "channel_name", backendless),
        ("BL:registrations/%00", "device_id", backendless),
    ],
)
def test_nul_in_a_path_or_query_parameter_is_a_400_naming_it_in_the_surfaces_shape(
    app: AppHandle, path: str, field: str, shape: Shape
) -> None:
    answer = _call(app, "GET", _path(app, path))
    assert answer.status_code == 400, answer.text
    assert shape(answer.json()) == field
    assert "NUL" in answer.text


@pytest.mark.parametrize(
    ("method", "path", "body", "field", "shape"),
    [
        (
            "POST",
            "/v1/registrations",
            {"token": "a" * 64, "topics": ["ok", "n\u0000"]},
            "topics.1",
            native,
        ),
        (
            "POST",
            "/v1/messages",
            {**PUSH, "payload": {"alert": "h\u0000i"}},
            "payload.alert",
            native,
        ),
        ("POST", "/push/2/message/single", {**INFOBIP_SEND, "text": "\u0000"}, "text", infobip),
        ("POST", SAP_USERS, {**SAP_PUSH, "users": ["\u0000"]}, "users.0", sap),
        ("POST", "/cm/events", {**CM_EVENT, "channel": "\u0000"}, "channel", native),
        (
            "POST",
            "BL:registrations",
            {"deviceToken": "t", "deviceId": "\u0000"},
            "deviceId",
            backendless,
        ),
        ("POST", "BL:news", {"message": "x", "headers": {"\u0000": "1"}}, "headers", backendless),
    ],
)
def test_nul_in_a_body_string_is_a_400_naming_the_field_and_writes_nothing(
    app: AppHandle, method: str, path: str, body: Any, field: str, shape: Shape
) -> None:
    before = _counts(app)
    answer = _call(app, method, _path(app, path), body)
    assert answer.status_code == 400, answer.text
    assert shape(answer.json()) == field
    assert _counts(app) == before


@pytest.mark.parametrize(("method", "path", "shape"), BODY_ROUTES)
def test_json_nested_ten_thousand_deep_is_a_400_in_the_surfaces_shape(
    app: AppHandle, method: str, path: str, shape: Shape
) -> None:
    answer = _call(app, method, _path(app, path), content=b"[" * 10_000 + b"]" * 10_000)
    assert answer.status_code == 400, answer.text
    shape(answer.json())
    assert "nested deeper than 32 levels" in answer.text


@pytest.mark.parametrize(("method", "path", "shape"), BODY_ROUTES)
def test_a_body_that_is_not_utf8_is_a_400_in_the_surfaces_shape(
    app: AppHandle, method: str, path: str, shape: Shape
) -> None:
    answer = _call(app, method, _path(app, path), content=b'{"a": "\xff\xfe"}')
    assert answer.status_code == 400, answer.text
    shape(answer.json())
    assert "not valid UTF-8" in answer.text


@pytest.mark.parametrize(
    ("raw", "field", "rule"),
    [
        (
            b'{"target": {"type": "users", "usernames": ["u"]}, "payload": {"badge": 1e400}}',
            "payload.badge",
            "finite",
        ),
        (
            b'{"target": {"type": "users", "usernames": ["u"]}, "payload": {"badge": NaN}}',
            "body",
            "NaN is not a JSON number",
        ),
        (
            b'{"target": {"type": "users", "usernames": ["u"]}, "payload": {"data": {"n": '
            b"123456789012345678901234567890}}}",
            "payload.data.n",
            "must be within",
        ),
        (
            b'{"target": {"type": "users", "usernames": ["u"]}, "payload": {"alert": "x"}, '
            b'"schedule": {"repeat_every": 4503599627370496}}',
            "schedule.repeat_every",
            "at most",
        ),
    ],
)
def test_numbers_out_of_range_are_a_400_naming_the_field_and_write_nothing(
    app: AppHandle, raw: bytes, field: str, rule: str
) -> None:
    before = _counts(app)
    answer = _call(app, "POST", "/v1/messages", content=raw)
    assert answer.status_code == 400, answer.text
    assert native(answer.json()) == field
    assert rule in answer.text
    assert _counts(app) == before


def test_backendless_repeat_every_out_of_range_is_its_400(app: AppHandle) -> None:
    answer = _call(app, "POST", _bl(app, "news"), {"message": "x", "repeatEvery": 2**52})
    assert answer.status_code == 400, answer.text
    assert backendless(answer.json()) == "repeatEvery"


@pytest.mark.parametrize(
    ("path", "body", "field"),
    [
        (
            "/v1/messages",
            {**PUSH, "target": {"type": "users", "usernames": ["u"] * 20_000}},
            "target",
        ),
        (
            "/v1/registrations",
            {"token": "c" * 64, "topics": [f"t{i}" for i in range(1001)]},
            "topics",
        ),
    ],
)
def test_a_huge_array_is_a_400_naming_the_field_and_writes_nothing(
    app: AppHandle, path: str, body: dict[str, Any], field: str
) -> None:
    before = _counts(app)
    answer = _call(app, "POST", path, body)
    assert answer.status_code == 400, answer.text
    assert native(answer.json()).startswith(field)
    assert _counts(app) == before


@pytest.mark.parametrize("content_type", [None, "text/plain", "application/json; charset=latin-1"])
@pytest.mark.parametrize(("method", "path", "shape"), BODY_ROUTES)
def test_a_body_not_declared_json_is_refused_and_writes_nothing(
    app: AppHandle, method: str, path: str, shape: Shape, content_type: str | None
) -> None:
    body = {
        "/v1/messages": PUSH,
        "/v1/registrations": {"token": "b" * 64},
        "/push/2/message/single": INFOBIP_SEND,
        SAP_USERS: SAP_PUSH,
        "/cm/events": CM_EVENT,
    }.get(path, {"message": "x", "deviceToken": "t", "deviceId": "d"})
    before = _counts(app)
    answer = _call(
        app, method, _path(app, path), content=json.dumps(body).encode(), content_type=content_type
    )
    # Backendless: its Content-Type header is mandatory and its client errors are 400s.
    assert answer.status_code == (400 if shape is backendless else 415), answer.text
    if shape is backendless:
        assert answer.json()["code"] == 8002
    else:
        assert shape(answer.json()) == "Content-Type"
    assert _counts(app) == before


def test_a_body_larger_than_one_mebibyte_is_a_413(app: AppHandle) -> None:
    body = {**PUSH, "payload": {"alert": "x", "data": {"blob": "a" * (1 << 20)}}}
    answer = _call(app, "POST", "/v1/messages", body)
    assert answer.status_code == 413, answer.text
    native(answer.json())


def test_a_declared_length_over_the_limit_is_refused_before_the_body_is_read(
    app: AppHandle,
) -> None:
    port = int(app.stack.api_url.rsplit(":", 1)[1])
    with socket.create_connection(("127.0.0.1", port), timeout=10) as conn:
        conn.sendall(
            b"POST /push/2/message/single HTTP/1.1\r\nHost: x\r\n"
            b"Content-Type: application/json\r\nContent-Length: 50000000\r\n\r\n"  # no body byte
        )
        answer = b""
        while chunk := conn.recv(65536):  # until the server closes: the body is not read
            answer += chunk
    text = answer.decode("latin-1")
    assert text.startswith("HTTP/1.1 413"), text
    assert "PAYLOAD_TOO_LARGE" in text


@pytest.mark.parametrize(
    ("method", "path", "allow", "shape"),
    [
        ("OPTIONS", "/v1/registrations", "GET, POST", native),
        ("PUT", "/v1/messages/abc", "GET", native),
        ("PATCH", "/v1/registrations/abc", "DELETE, GET", native),
        ("DELETE", "/push/2/message/single", "POST", infobip),
        ("PATCH", f"{SAP}/v1/runtime/applications/x/notifications/n/status", "POST, PUT", sap),
        ("OPTIONS", "BL:registrations/d1", "DELETE, GET", backendless),
        ("GET", "BL:registrations", "POST", backendless),
        ("PUT", "BL:news", "GET, POST", backendless),
    ],
)
def test_a_method_the_path_lacks_is_a_405_whose_allow_names_every_method_of_the_path(
    app: AppHandle, method: str, path: str, allow: str, shape: Shape
) -> None:
    answer = _call(app, method, _path(app, path), content_type=None)
    assert answer.status_code == 405, answer.text
    assert answer.headers["allow"] == allow
    body = answer.json()
    if shape is infobip:
        assert body["requestError"]["serviceException"]["messageId"] == "METHOD_NOT_ALLOWED"
    elif shape is sap:
        assert body["status"] == 405 and body["error"] == "Method Not Allowed"
    elif shape is backendless:
        assert body == {"message": body["message"], "code": 405}
    else:
        assert body["error"] == "method_not_allowed" and "detail" not in body


@pytest.mark.parametrize(
    "path",
    [
        "//{key}/messaging/news",  # no application id
        "/{app}/{key}/messaging/",  # no channel
        "/{app}%2Fx/{key}/messaging/news",  # an id with a slash in it
        "/{app}/not-a-key/messaging/news",
        "/{other}/{key}/messaging/news",  # the key of another application
        "/{app}/{key}/messaging/registrations/a/b",  # no such route
    ],
)
def test_backendless_answers_message_and_code_for_malformed_ids_and_keys(
    app: AppHandle, path: str
) -> None:
    url = path.format(app=app.creds.app_id, key=app.creds.api_key, other=uuid.uuid4())
    answer = _call(app, "POST", url, {"message": "x"})
    assert 400 <= answer.status_code < 500, answer.text
    assert set(answer.json()) == {"message", "code"}
    assert app.creds.api_key not in answer.text  # an error never echoes the key


@pytest.mark.parametrize(
    ("path", "shape"),
    [
        ("/v1/no-such-thing", native),
        ("/v1/registrations?limit=lots", native),
        ("/push/1/nothing-here", infobip),
        (f"{SAP}/v2/nothing", sap),
    ],
)
def test_routing_and_parameter_errors_are_in_the_surfaces_shape_never_fastapis(
    app: AppHandle, path: str, shape: Shape
) -> None:
    answer = _call(app, "GET", path)
    assert answer.status_code in (400, 404), answer.text
    body = answer.json()
    assert "detail" not in body
    if shape is infobip:
        assert set(body) == {"requestError"}
    elif shape is sap:
        assert set(body) == {"status", "error", "message", "details"}
    else:
        assert {"error", "message", "details"} <= set(body)
