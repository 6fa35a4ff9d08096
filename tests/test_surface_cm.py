"""CM.com push events: every example document of the seed posted to `POST /cm/events`
changes exactly the Registration / Delivery rows it should, on PostgreSQL and SQLite; bad
documents are 400s naming the field; and a real HTTP receiver on localhost gets signed,
CM-shaped webhook events for installations, engagement and delivery outcomes, retried
until it answers while delivery itself never waits for it."""

from __future__ import annotations

import copy
import json
import re
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import pytest
from sqlmodel import Session, select

from producer.apps import create_key
from producer.stack import free_port
from schemas.cm import BATCH_HEADER, SIGNATURE_HEADER, TIMESTAMP_HEADER, verify
from schemas.db import engine_for
from schemas.tables import Delivery, Registration
from tests.conftest import AppHandle, accepted

# --- the seed's example documents, as printed (placeholders filled in per test) -------------

CLIENT_INSTALLED = {
    "from": {"number": "<INSTALLATION_ID>"},
    "to": {"number": "<APP_KEY>"},
    "event": {
        "type": "ClientInstalled",
        "custom": {
            "clientId": "com.cm.notifire",
            "clientVersion": "3.0.0",
            "msisdn": None,
            "deviceOs": "Android",
            "deviceOsVersion": "12",
            "deviceModel": "SM-A515F",
            "pushAuthorization": "Authorized",
            "preferredLanguages": ["nl"],
        },
    },
    "timeUtc": "2022-06-01T17:08:45",
    "channel": "MobilePush",
}
CLIENT_UPDATED = {
    "from": {"number": "<INSTALLATION_ID>"},
    "to": {"number": "<APP_KEY>"},
    "event": {
        "type": "ClientUpdated",
        "custom": {
            "clientId": "com.cm.notifire",
            "clientVersion": "3.0.0",
            "msisdn": "0031612345678",
            "deviceOs": "Android",
            "deviceOsVersion": "12",
            "deviceModel": "SM-A515F",
            "pushAuthorization": "Authorized",
            "preferredLanguages": ["nl"],
        },
    },
    "timeUtc": "2022-06-01T17:08:45",
    "channel": "MobilePush",
}
CLIENT_UNREGISTERED = {
    "from": {"number": "<INSTALLATION_ID>"},
    "to": {"number": "<APP_KEY>"},
    "event": {
        "type": "ClientUnregistered",
        "custom": {"clientId": "com.cm.notifire", "msisdn": "0031612345678"},
    },
    "timeUtc": "2022-06-01T17:08:45",
    "channel": "MobilePush",
}


def _message_event(kind: str) -> dict[str, Any]:
    return {
        "from": {"number": "<INSTALLATION_ID>"},
        "to": {"number": "<APP_KEY>"},
        "event": {"type": kind, "reference": "5dbc0313-9031-4f4f-8dc8-5ab712b20722"},
        "timeUtc": "2022-06-15T17:08:45",
        "channel": "MobilePush",
    }


MESSAGE_DISMISSED = _message_event("MessageDismissed")
MESSAGE_OPENED = _message_event("MessageOpened")
MESSAGE_DELETE = _message_event("MessageDelete")

TIME_UTC = re.compile(r"^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d$")  # no zone, as CM writes it


def fill(
    doc: dict[str, Any],
    installation: str,
    app_key: str,
    reference: str | None = None,
    **custom: Any,
) -> dict[str, Any]:
    out = copy.deepcopy(doc)
    out["from"]["number"], out["to"]["number"] = installation, app_key
    if reference is not None:
        out["event"]["reference"] = reference
    if custom:
        out["event"].setdefault("custom", {}).update(custom)
    return out


def post(app: AppHandle, doc: Any, key: str | None = None) -> httpx.Response:
    headers = {"X-API-Key": key or app.creds.api_key}
    content = doc if isinstance(doc, str) else json.dumps(doc)
    return httpx.post(
        f"{app.stack.api_url}/cm/events",
        content=content,
        headers={**headers, "Content-Type": "application/json"},
        timeout=10,
    )


def registration(app: AppHandle, registration_id: str) -> Registration:
    assert app.stack.database_url
    with Session(engine_for(app.stack.database_url)) as s:
        reg = s.get(Registration, registration_id)
        assert reg is not None
        return reg


def delivery_of(app: AppHandle, message_id: str) -> Delivery:
    assert app.stack.database_url
    with Session(engine_for(app.stack.database_url)) as s:
        rows = list(s.exec(select(Delivery).where(Delivery.message_id == message_id)))
    assert len(rows) == 1, rows
    return rows[0]


def push_to(app: AppHandle, registration_id: str) -> str:
    accepted_ = app.client.push(
        {
            "target": {"type": "device", "registration_id": registration_id},
            "payload": {"alert": {"title": "Hi", "body": "from CM"}},
        }
    )
    app.wait(accepted_.id)
    return accepted_.id


def ios_install(app: AppHandle, installation: uuid.UUID) -> tuple[str, str]:
    """A CM installation with Pushline's `custom.pushToken`; returns (registration id, token)."""
    token = secrets.token_hex(32)
    doc = fill(
        CLIENT_INSTALLED, installation.hex, app.creds.app_id, deviceOs="iOs", pushToken=token
    )
    answer = post(app, doc)
    assert answer.status_code == 200, answer.text
    return answer.json()["registrationId"], token


# --- inbound: lifecycle ----------------------------------------------------------------------


def test_seed_lifecycle_examples_create_update_and_deactivate_the_installation(
    any_app: AppHandle,
) -> None:
    installation = uuid.uuid4()
    app_key = uuid.UUID(any_app.creds.app_id)

    # ClientInstalled, GUIDs with hyphens: a Registration without a token yet.
    answer = post(any_app, fill(CLIENT_INSTALLED, str(installation), str(app_key)))
    assert answer.status_code == 200, answer.text
    reg_id = answer.json()["registrationId"]
    reg = registration(any_app, reg_id)
    assert (reg.device_id, reg.provider, reg.platform, reg.token) == (
        installation.hex,
        "fcm",
        "android",
        None,
    )
    assert (reg.app_version, reg.os_version, reg.device_model) == ("3.0.0", "12", "SM-A515F")
    assert reg.notifications_enabled is True and reg.active is True
    assert (reg.preferred_languages, reg.locale, reg.phone_number) == (["nl"], "nl", None)

    # ClientUpdated, GUIDs without hyphens: the same installation, now with its msisdn.
    answer = post(any_app, fill(CLIENT_UPDATED, installation.hex, app_key.hex))
    assert answer.status_code == 200, answer.text
    assert answer.json()["registrationId"] == reg_id
    assert registration(any_app, reg_id).phone_number == "31612345678"

    # ClientUnregistered (upper-case hex is a GUID too): deactivated, kept.
    answer = post(any_app, fill(CLIENT_UNREGISTERED, installation.hex.upper(), app_key.hex))
    assert answer.status_code == 200, answer.text
    assert answer.json()["active"] is False
    assert registration(any_app, reg_id).active is False

    # Installed again, notifications refused: revived, notifications disabled.
    again = fill(CLIENT_INSTALLED, str(installation), app_key.hex)
    again["event"]["custom"]["pushAuthorization"] = "NotAuthorized"
    answer = post(any_app, again)
    assert answer.json()["registrationId"] == reg_id
    reg = registration(any_app, reg_id)
    assert reg.active is True and reg.notifications_enabled is False


def test_installation_without_push_token_gets_code_5_until_its_token_arrives(
    app: AppHandle,
) -> None:
    installation = uuid.uuid4().hex
    answer = post(app, fill(CLIENT_INSTALLED, installation, app.creds.app_id))
    reg_id = answer.json()["registrationId"]
    row = delivery_of(app, push_to(app, reg_id))
    assert (row.status, row.code) == ("ERROR", 5)
    # Engagement with a delivery that never reached the device is a conflict.
    opened = post(app, fill(MESSAGE_OPENED, installation, app.creds.app_id, row.id))
    assert opened.status_code == 409, opened.text

    # ClientUpdated with Pushline's custom.pushToken: the same installation becomes reachable.
    token = f"fcm-{secrets.token_urlsafe(24)}:APA91b"
    updated = post(app, fill(CLIENT_UPDATED, installation, app.creds.app_id, pushToken=token))
    assert updated.json()["registrationId"] == reg_id
    row = delivery_of(app, push_to(app, reg_id))
    assert (row.status, row.code) == ("SENT", 0)
    assert accepted(app.stack.fcm.stats(), token) == 1

    unknown = post(app, fill(CLIENT_UNREGISTERED, uuid.uuid4().hex, app.creds.app_id))
    assert unknown.status_code == 404, unknown.text


# --- inbound: engagement -----------------------------------------------------------------------


def test_seed_engagement_examples_move_the_delivery_forward_only(any_app: AppHandle) -> None:
    installation = uuid.uuid4()
    reg_id, token = ios_install(any_app, installation)
    reg = registration(any_app, reg_id)
    assert (reg.provider, reg.platform, reg.token) == ("apns", "ios", token)
    delivery = delivery_of(any_app, push_to(any_app, reg_id))
    assert delivery.status == "SENT" and accepted(any_app.stack.apns.stats(), token) == 1
    key, ref = any_app.creds.app_id, delivery.id

    def report(doc: dict[str, Any], reference: str) -> str:
        answer = post(any_app, fill(doc, str(installation), key, reference))
        assert answer.status_code == 200, answer.text
        return str(answer.json()["status"])

    assert report(MESSAGE_DISMISSED, ref) == "RECEIVED"
    assert report(MESSAGE_OPENED, uuid.UUID(ref).hex) == "CONSUMED"  # reference without hyphens
    later = {**MESSAGE_DISMISSED, "timeUtc": "2022-06-16T08:00:00"}
    assert report(later, ref) == "CONSUMED"  # never backwards; the first dismissal stands
    assert report({**MESSAGE_DELETE, "timeUtc": "2022-06-17T09:30:00"}, ref) == "CONSUMED"
    row = delivery_of(any_app, delivery.message_id)
    assert row.status == "CONSUMED"
    assert row.received_at is not None and row.consumed_at is not None
    # The dismissal is a report of its own, at the event's time, beside the deletion's.
    seen = any_app.client.delivery(ref)
    assert seen.dismissed_at is not None and seen.deleted_at is not None
    assert seen.dismissed_at.replace(tzinfo=None).isoformat() == "2022-06-15T17:08:45"
    assert seen.deleted_at.replace(tzinfo=None).isoformat() == "2022-06-17T09:30:00"

    unknown = post(any_app, fill(MESSAGE_OPENED, str(installation), key))  # the seed's reference
    assert unknown.status_code == 404, unknown.text


# --- inbound: bad documents --------------------------------------------------------------------

BAD: list[tuple[str, Callable[[dict[str, Any]], Any], str]] = [
    ("malformed JSON", lambda d: json.dumps(d)[:-3], "body"),
    ("no from", lambda d: {k: v for k, v in d.items() if k != "from"}, "from"),
    ("placeholder id", lambda d: {**d, "from": {"number": "<INSTALLATION_ID>"}}, "from.number"),
    ("short AppKey", lambda d: {**d, "to": {"number": "12ab"}}, "to.number"),
    ("unknown type", lambda d: {**d, "event": {**d["event"], "type": "ClientLost"}}, "event.type"),
    (
        "unknown deviceOs",
        lambda d: {**d, "event": {**d["event"], "custom": {"deviceOs": "Symbian"}}},
        "event.custom.deviceOs",
    ),
    (
        "unknown pushAuthorization",
        lambda d: {**d, "event": {**d["event"], "custom": {"pushAuthorization": "Maybe"}}},
        "event.custom.pushAuthorization",
    ),
    (
        "no deviceOs for a new installation",
        lambda d: {**d, "event": {**d["event"], "custom": {"clientVersion": "1"}}},
        "event.custom.deviceOs",
    ),
    (
        "token that is no APNs token",
        lambda d: {
            **d,
            "event": {**d["event"], "custom": {"deviceOs": "iOs", "pushToken": "not-hex"}},
        },
        "event.custom.pushToken",
    ),
    ("bad timeUtc", lambda d: {**d, "timeUtc": "yesterday"}, "timeUtc"),
    ("not a push channel", lambda d: {**d, "channel": "WhatsApp"}, "channel"),
    (
        "engagement without reference",
        lambda d: {**d, "event": {"type": "MessageOpened"}},
        "event.reference",
    ),
    (
        "reference that is no GUID",
        lambda d: {**d, "event": {"type": "MessageOpened", "reference": "42"}},
        "event.reference",
    ),
]


def test_malformed_documents_are_400_naming_the_field_and_write_nothing(app: AppHandle) -> None:
    base = fill(CLIENT_INSTALLED, uuid.uuid4().hex, app.creds.app_id)
    for name, mutate, field_ in BAD:
        answer = post(app, mutate(copy.deepcopy(base)))
        assert answer.status_code == 400, (name, answer.text)
        assert answer.json()["details"][0]["field"] == field_, (name, answer.text)
    assert app.client.registrations().items == []

    assert post(app, base, key="pl_not-a-key").status_code == 401
    assert app.stack.database_url
    engine = engine_for(app.stack.database_url)
    pusher, _ = create_key(engine, app.creds.app_id, ["push_single"])
    forbidden = post(app, base, key=pusher)
    assert forbidden.status_code == 403 and "admin" in forbidden.json()["message"]


# --- outbound: webhooks -------------------------------------------------------------------------


@dataclass
class Hit:
    path: str
    headers: dict[str, str]
    body: bytes
    status: int

    @property
    def documents(self) -> list[dict[str, Any]]:
        docs: list[dict[str, Any]] = json.loads(self.body)
        return docs


@dataclass
class Receiver:
    """A real HTTP server on localhost; `fail_first[path]` answers 503 that many times."""

    url: str
    hits: list[Hit] = field(default_factory=list)
    fail_first: dict[str, int] = field(default_factory=dict)
    lock: threading.Lock = field(default_factory=threading.Lock)

    def record(self, path: str, headers: dict[str, str], body: bytes) -> int:
        with self.lock:
            left = self.fail_first.get(path, 0)
            self.fail_first[path] = max(0, left - 1)
            status = 503 if left else 200
            self.hits.append(Hit(path, headers, body, status))
            return status

    def ok_documents(self, path: str) -> list[dict[str, Any]]:
        """Documents of the requests this receiver answered 200."""
        with self.lock:
            hits = [h for h in self.hits if h.path == path and h.status == 200]
        return [d for h in hits for d in h.documents]

    def wait_for(self, path: str, match: Callable[[dict[str, Any]], bool]) -> dict[str, Any]:
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            found = [d for d in self.ok_documents(path) if match(d)]
            if found:
                return found[0]
            time.sleep(0.05)
        raise AssertionError(f"{path}: no matching event in {self.hits}")


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    holder: dict[str, Receiver] = {}

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers["Content-Length"]))
            headers = {k.lower(): v for k, v in self.headers.items()}
            status = holder["r"].record(self.path, headers, body)
            self.send_response(status)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, *_: Any) -> None:
            pass

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    holder["r"] = Receiver(f"http://127.0.0.1:{server.server_address[1]}")
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield holder["r"]
    server.shutdown()
    server.server_close()


def subscribe(app: AppHandle, url: str, secret: str, events: list[str] | None = None) -> str:
    body: dict[str, Any] = {"url": url, "secret": secret}
    if events is not None:
        body["events"] = events
    answer = httpx.post(
        f"{app.stack.api_url}/v1/webhooks",
        json=body,
        headers={"X-API-Key": app.creds.api_key},
        timeout=10,
    )
    assert answer.status_code == 201, answer.text
    return str(answer.json()["id"])


def assert_signed(receiver: Receiver, secret: str, path: str) -> None:
    hits = [h for h in receiver.hits if h.path == path]
    assert hits
    for h in hits:
        assert verify(
            secret,
            h.headers[TIMESTAMP_HEADER.lower()],
            h.body,
            h.headers[SIGNATURE_HEADER.lower()],
            now=time.time(),
        )
        assert not verify(
            "another-secret-entirely",
            h.headers[TIMESTAMP_HEADER.lower()],
            h.body,
            h.headers[SIGNATURE_HEADER.lower()],
            now=time.time(),
        )


def test_webhook_receives_signed_cm_events_for_installations_and_delivery_outcomes(
    app: AppHandle, receiver: Receiver
) -> None:
    secret = secrets.token_urlsafe(24)
    subscribe(app, f"{receiver.url}/all", secret)
    subscribe(app, f"{receiver.url}/failed", secret, ["MessageFailed"])
    app_hex = uuid.UUID(app.creds.app_id).hex

    installation = uuid.uuid4()
    reg_ok, token_ok = ios_install(app, installation)
    dead = secrets.token_hex(32)
    app.stack.apns.script(token=dead, then="Unregistered")
    app.client.register({"token": dead, "platform": "ios", "device_id": "dev-dead"})

    installed = receiver.wait_for(
        "/all",
        lambda d: (
            d["event"]["type"] == "ClientInstalled" and d["from"] == {"number": installation.hex}
        ),
    )
    # A device registered through the native API is announced the same way.
    native = receiver.wait_for(
        "/all",
        lambda d: d["event"]["type"] == "ClientInstalled" and d["from"] == {"number": "dev-dead"},
    )
    assert native["event"]["custom"]["deviceOs"] == "iOs"
    assert installed["to"] == {"number": app_hex}
    assert installed["channel"] == "MobilePush" and TIME_UTC.match(installed["timeUtc"])
    assert installed["event"]["custom"]["deviceOs"] == "iOs"
    assert installed["event"]["custom"]["clientId"] == "com.cm.notifire"
    assert "pushToken" not in installed["event"]["custom"]

    message = app.client.push(
        {
            "target": {"type": "device_ids", "device_ids": [installation.hex, "dev-dead"]},
            "payload": {"alert": {"title": "Hi", "body": "both"}},
        }
    )
    app.wait(message.id)
    rows = {d.registration_id: d for d in app.client.deliveries(message.id).items}
    ok = rows[reg_ok]
    failed = next(d for r, d in rows.items() if r != reg_ok)
    assert (ok.status, failed.status, failed.code) == ("SENT", "ERROR", 7)
    assert accepted(app.stack.apns.stats(), token_ok) == 1

    sent = receiver.wait_for("/all", lambda d: d["event"].get("reference") == ok.id)
    assert sent["event"]["type"] == "MessageSent" and sent["event"]["custom"]["code"] == 0
    assert sent["from"] == {"number": installation.hex} and sent["to"] == {"number": app_hex}
    gone = receiver.wait_for("/all", lambda d: d["event"].get("reference") == failed.id)
    assert gone["event"]["type"] == "MessageFailed" and gone["event"]["custom"]["code"] == 7
    assert gone["event"]["custom"]["messageId"] == message.id
    assert gone["from"] == {"number": "dev-dead"}
    retired = receiver.wait_for(
        "/all",
        lambda d: (
            d["event"]["type"] == "ClientUnregistered" and d["from"] == {"number": "dev-dead"}
        ),
    )
    # The seed's keys only: why is in the MessageFailed above (code 7).
    assert retired["event"]["custom"] == {"clientId": None, "msisdn": None}

    # Engagement reported by the app is relayed too, reference with its hyphens.
    opened = post(app, fill(MESSAGE_OPENED, installation.hex, app_hex, uuid.UUID(ok.id).hex))
    assert opened.status_code == 200, opened.text
    relayed = receiver.wait_for("/all", lambda d: d["event"]["type"] == "MessageOpened")
    assert relayed["event"]["reference"] == ok.id

    # The filtered subscription got the failure and nothing else.
    receiver.wait_for("/failed", lambda d: d["event"].get("reference") == failed.id)
    assert {d["event"]["type"] for d in receiver.ok_documents("/failed")} == {"MessageFailed"}
    assert_signed(receiver, secret, "/all")
    assert_signed(receiver, secret, "/failed")


def test_failing_receiver_gets_the_events_on_a_retry_while_delivery_completes(
    app: AppHandle, receiver: Receiver
) -> None:
    secret = secrets.token_urlsafe(24)
    receiver.fail_first["/flaky"] = 2
    subscribe(app, f"{receiver.url}/flaky", secret, ["MessageSent"])
    nobody = subscribe(app, f"http://127.0.0.1:{free_port()}/closed", secret)  # refused

    reg_id, token = ios_install(app, uuid.uuid4())
    message_id = push_to(app, reg_id)
    row = delivery_of(app, message_id)
    assert row.status == "SENT" and accepted(app.stack.apns.stats(), token) == 1

    receiver.wait_for("/flaky", lambda d: d["event"].get("reference") == row.id)
    hits = [h for h in receiver.hits if h.path == "/flaky"]
    assert len(hits) == 3  # two 503s, then the 200
    assert len({h.headers[BATCH_HEADER.lower()] for h in hits}) == 1  # the same batch each time
    assert len({h.body for h in hits}) == 1
    assert_signed(receiver, secret, "/flaky")

    # Unsubscribing stops the retries of the receiver nobody answers for.
    gone = httpx.delete(
        f"{app.stack.api_url}/v1/webhooks/{nobody}",
        headers={"X-API-Key": app.creds.api_key},
        timeout=10,
    )
    assert gone.status_code == 204


def test_webhook_routes_need_admin_and_name_bad_fields(app: AppHandle, receiver: Receiver) -> None:
    url, headers = f"{app.stack.api_url}/v1/webhooks", {"X-API-Key": app.creds.api_key}
    created = httpx.post(url, json={"url": f"{receiver.url}/x"}, headers=headers, timeout=10)
    assert created.status_code == 201 and len(created.json()["secret"]) >= 32
    listed = httpx.get(url, headers=headers, timeout=10).json()["items"]
    assert [(w["id"], w["events"]) for w in listed] == [(created.json()["id"], ["*"])]
    assert "secret" not in listed[0]

    bad_url = httpx.post(url, json={"url": "ftp://example.com/x"}, headers=headers, timeout=10)
    assert bad_url.status_code == 400 and bad_url.json()["details"][0]["field"] == "url"
    bad_event = httpx.post(
        url, json={"url": receiver.url, "events": ["MessageRead"]}, headers=headers, timeout=10
    )
    assert bad_event.status_code == 400 and bad_event.json()["details"][0]["field"] == "events"
    nothing = httpx.post(url, json={"url": receiver.url, "events": []}, headers=headers, timeout=10)
    assert nothing.status_code == 400 and nothing.json()["details"][0]["field"] == "events"

    assert app.stack.database_url
    reader, _ = create_key(
        engine_for(app.stack.database_url), app.creds.app_id, ["pushregistrations_read"]
    )
    denied = httpx.get(url, headers={"X-API-Key": reader}, timeout=10)
    assert denied.status_code == 403 and "admin" in denied.json()["message"]

    other = app.stack.add_app(f"t-{uuid.uuid4().hex[:12]}")
    target = f"{url}/{created.json()['id']}"
    assert httpx.delete(target, headers={"X-API-Key": other.api_key}).status_code == 404
    assert httpx.delete(target, headers=headers).status_code == 204
    assert httpx.delete(target, headers=headers).status_code == 404


SEED_KEYS = {
    "ClientInstalled": set(CLIENT_INSTALLED["event"]["custom"]),  # type: ignore[index]
    "ClientUpdated": set(CLIENT_UPDATED["event"]["custom"]),  # type: ignore[index]
    "ClientUnregistered": set(CLIENT_UNREGISTERED["event"]["custom"]),  # type: ignore[index]
}


def test_what_the_events_said_of_an_installation_goes_out_again_in_the_seed_keys(
    app: AppHandle, receiver: Receiver
) -> None:
    subscribe(app, f"{receiver.url}/kept", secrets.token_urlsafe(24))
    app_hex = uuid.UUID(app.creds.app_id).hex
    kept, retired = uuid.uuid4(), uuid.uuid4()

    def said(installation: uuid.UUID, kind: str) -> dict[str, Any]:
        return receiver.wait_for(
            "/kept",
            lambda d: d["event"]["type"] == kind and d["from"] == {"number": installation.hex},
        )

    # Installed, then updated with the verified phone (the seed's ClientUpdated, on iOS).
    reg_id, _ = ios_install(app, kept)
    updated = fill(CLIENT_UPDATED, kept.hex, app_hex, deviceOs="iOs", clientId="com.cm.app")
    assert post(app, updated).status_code == 200
    row = registration(app, reg_id)
    assert (row.client_id, row.phone_number) == ("com.cm.app", "31612345678")
    # Dismissed: relayed as the seed shows it, type and reference only.
    ref = delivery_of(app, push_to(app, reg_id)).id
    assert post(app, fill(MESSAGE_DISMISSED, kept.hex, app_hex, ref)).status_code == 200
    assert said(kept, "MessageDismissed")["event"] == {"type": "MessageDismissed", "reference": ref}
    # Updated through the native route: the clientId its events gave still goes out.
    row = registration(app, reg_id)
    app.client.register({"token": f"iOS:{row.token}", "device_id": kept.hex, "app_version": "3.1"})
    native = receiver.wait_for(
        "/kept",
        lambda d: d["event"].get("custom", {}).get("clientVersion") == "3.1",
    )
    assert native["event"]["custom"]["clientId"] == "com.cm.app"
    # The app unregisters without repeating its ids: what was kept goes out.
    bare = fill(CLIENT_UNREGISTERED, kept.hex, app_hex)
    bare["event"]["custom"] = {}
    assert post(app, bare).status_code == 200
    gone = said(kept, "ClientUnregistered")["event"]["custom"]
    assert gone == {"clientId": "com.cm.app", "msisdn": "0031612345678"}
    for kind in ("ClientInstalled", "ClientUpdated"):
        assert set(said(kept, kind)["event"]["custom"]) == SEED_KEYS[kind]
    assert said(kept, "ClientUpdated")["event"]["custom"]["clientId"] == "com.cm.app"

    # The provider retires a token: ClientUnregistered with the installation's own ids.
    reg_id, token = ios_install(app, retired)
    updated = fill(CLIENT_UPDATED, retired.hex, app_hex, deviceOs="iOs")
    assert post(app, updated).status_code == 200
    app.stack.apns.script(token=token, then="Unregistered")
    push_to(app, reg_id)
    gone = said(retired, "ClientUnregistered")["event"]["custom"]
    assert gone == {"clientId": "com.cm.notifire", "msisdn": "0031612345678"}
