"""Cancelling a Message in flight: nothing more reaches the providers, the rest CANCELLED."""

from __future__ import annotations

import time

import httpx

from producer.apps import create_key
from schemas import infobip, sap
from schemas.codes import DeliveryStatus, Role
from schemas.db import engine_for
from tests.conftest import AppHandle, register_bulk
from tests.test_cli import run

ALERT = {"alert": {"title": "t", "body": "b"}}
DEVICES = 3000
SLOW_MS = 500  # the simulator answers each request this late: the broadcast takes seconds


def _accepted(app: AppHandle, tokens: set[str]) -> int:
    counts = app.stack.apns.stats()["accepted"]
    return sum(n for t, n in counts.items() if t in tokens)


def test_cancel_mid_broadcast_stops_every_send_beyond_those_in_flight(app: AppHandle) -> None:
    tokens = set(register_bulk(app.stack, app.creds.app_id, DEVICES))
    app.stack.apns.configure(latency_ms=SLOW_MS)
    try:
        body = {"target": {"type": "application"}, "payload": ALERT, "name": "oops"}
        message_id = app.client.push(body).id
        deadline = time.monotonic() + 60
        while (before := _accepted(app, tokens)) < 200:
            assert time.monotonic() < deadline, "the broadcast never got going"
            time.sleep(0.05)
        answer = app.client.cancel(message_id)
        at_answer = _accepted(app, tokens)
        assert answer.state == "cancelled"
        while app.client.message(message_id).by_status.get("QUEUED"):
            assert time.monotonic() < deadline, "deliveries still QUEUED after the cancel"
            time.sleep(0.1)
        time.sleep(1.5)  # anything still on the wire answers by now
        final = app.client.message(message_id)
        after = _accepted(app, tokens)
    finally:
        app.stack.apns.configure(latency_ms=0)
    # At most one send window per worker process was on the wire when the cancel answered.
    in_flight = app.stack.worker_concurrency * 100  # PUSHLINE_SEND_CONCURRENCY default
    assert after - at_answer <= in_flight
    assert final.state == "cancelled" and final.completed_at is not None
    sent = final.by_status.get("SENT", 0)
    # What reached the simulator is exactly what is recorded SENT; SENT stayed SENT.
    assert sent == after >= before
    assert final.by_status == {"SENT": sent, "CANCELLED": DEVICES - sent}
    assert DEVICES - sent >= DEVICES // 2  # most of the broadcast never went out
    assert "CANCELLED" not in {str(k) for k in final.by_code}  # no result code: never sent
    minutes = app.client.timeline(message_id).minutes
    assert sum(m.cancelled for m in minutes) == DEVICES - sent
    assert sum(m.sent for m in minutes) == sent
    assert [m.id for m in app.client.messages(state="cancelled").items] == [message_id]
    assert app.client.cancel(message_id).by_status == final.by_status  # again: as it is


def test_cancel_needs_the_push_role_and_a_message_still_in_flight(app: AppHandle) -> None:
    app.ios("fin")
    done = app.push_users("fin")
    url = f"{app.stack.api_url}/v1/messages/{done.id}/cancel"
    r = httpx.post(url, headers={"X-API-Key": app.creds.api_key})
    assert r.status_code == 409 and "already done" in r.json()["message"]
    assert app.client.message(done.id).by_status == {"SENT": 1}
    r = httpx.post(
        f"{app.stack.api_url}/v1/messages/nope/cancel", headers={"X-API-Key": app.creds.api_key}
    )
    assert r.status_code == 404
    everyone = app.client.push({"target": {"type": "application"}, "payload": ALERT}).id
    assert app.stack.database_url
    engine = engine_for(app.stack.database_url)
    single, _ = create_key(engine, app.creds.app_id, [Role.PUSH_SINGLE])
    url = f"{app.stack.api_url}/v1/messages/{everyone}/cancel"
    r = httpx.post(url, headers={"X-API-Key": single})
    assert r.status_code == 403  # cancelling a broadcast takes push_all, as pushing it did
    other = app.stack.add_app(f"{app.creds.app_id[-12:]}-other")
    assert httpx.post(url, headers={"X-API-Key": other.api_key}).status_code == 404
    assert app.stack.database_url
    out = run("messages", "cancel", done.id, env={"DATABASE_URL": app.stack.database_url})
    assert out.returncode == 2 and "already done" in out.stdout


def test_cancelled_deliveries_are_counted_apart_in_the_seed_views() -> None:
    assert sap.reported_code(DeliveryStatus.CANCELLED, None) == 3
    assert sap.result_message(DeliveryStatus.CANCELLED, None, "cancelled by the sender") == (
        "cancelled by the sender"
    )
    assert infobip.status_of(DeliveryStatus.CANCELLED, None, None).name == "REJECTED_CANCELLED"
    stats = infobip.statistics([("SENT", 0, False, 3), ("CANCELLED", None, False, 7)])
    assert stats["totalSent"] == 10 and stats["cancelled"] == 7
    assert stats["errors"] == {"registration": 0, "expired": 0, "cloud": 0}
    assert "cancelled" not in infobip.statistics([("SENT", 0, False, 3)])
