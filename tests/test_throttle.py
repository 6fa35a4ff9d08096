"""A throttled campaign goes out at a steady rate; the priority lane is never slowed."""

from __future__ import annotations

from datetime import datetime

import httpx
from sqlalchemy import select
from sqlmodel import Session, col

from schemas.campaigns import spread_rate
from schemas.db import engine_for
from schemas.tables import Delivery
from tests.conftest import AppHandle, register_bulk

ALERT = {"alert": {"title": "t", "body": "b"}}
DEVICES = 1000
OVER_S = 10  # 100 a second: 500 in any 5 s window


def _sent_times(app: AppHandle, message_id: str) -> list[datetime]:
    assert app.stack.database_url
    with Session(engine_for(app.stack.database_url)) as s:
        q = select(col(Delivery.sent_at)).where(col(Delivery.message_id) == message_id)
        return sorted(t for t in s.execute(q).scalars() if t is not None)


def test_deliver_over_spreads_a_broadcast_evenly_and_the_priority_lane_goes_by(
    app: AppHandle,
) -> None:
    app.ios("vip")
    register_bulk(app.stack, app.creds.app_id, DEVICES - 1)
    body = {"target": {"type": "application"}, "payload": ALERT, "deliver_over": OVER_S}
    campaign = app.client.push(body).id
    urgent = {
        "target": {"type": "users", "usernames": ["vip"]},
        "payload": {**ALERT, "priority": "high"},
    }
    quick = app.wait(app.client.push(urgent).id)
    assert quick.by_status == {"SENT": 1}
    # The one-person push finished while the throttled campaign was still going out.
    assert app.client.message(campaign).state in ("accepted", "dispatched")
    done = app.wait(campaign, timeout=120)
    assert done.by_status == {"SENT": DEVICES}

    times = _sent_times(app, campaign)
    assert len(times) == DEVICES
    span = (times[-1] - times[0]).total_seconds()
    assert span >= OVER_S * 0.8  # spread, not sent at once
    even = DEVICES / OVER_S * 5
    start = 0
    for end, t in enumerate(times):  # every 5 s window ending at a send
        while (t - times[start]).total_seconds() > 5:
            start += 1
        assert end - start + 1 <= even * 1.1, f"{end - start + 1} sent within 5 s at {t}"


def test_a_throttle_is_for_campaigns_and_the_rate_is_the_slower_of_the_two(
    app: AppHandle,
) -> None:
    url, headers = f"{app.stack.api_url}/v1/messages", {"X-API-Key": app.creds.api_key}
    one = {"target": {"type": "device", "registration_id": "r1"}, "payload": ALERT}
    r = httpx.post(url, headers=headers, json={**one, "max_per_minute": 10})
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "max_per_minute"
    r = httpx.post(
        url, headers=headers, json={**one, "deliver_over": 0, "target": {"type": "application"}}
    )
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "deliver_over"
    assert spread_rate(10_000, 60, None) == 10_000
    assert spread_rate(10_000, 60, 600) == 600
    assert spread_rate(1, 3600, None) == 1
