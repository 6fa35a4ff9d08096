"""Quiet hours: a campaign push to a device inside its local quiet hours waits, QUEUED with
the time they end, and goes out then; transactional (priority) pushes are never held."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx

from producer.apps import update_app
from schemas.admin import AppUpdate
from schemas.api import DeliveryOut, QuietHours
from schemas.db import engine_for
from schemas.settings import Settings
from tests.conftest import AppHandle

ALERT = {"alert": {"title": "t", "body": "b"}}
ZONE = "Asia/Tokyo"
ELSEWHERE = "Europe/Lisbon"  # nine hours behind: outside Tokyo's quiet hours


def _quiet_until(seconds: float) -> tuple[dict[str, str], datetime]:
    """Quiet hours in ZONE that began an hour ago and end `seconds` from now."""
    now = datetime.now(UTC)
    end = (now + timedelta(seconds=seconds + 1)).replace(microsecond=0)  # whole seconds
    local = ZoneInfo(ZONE)
    start = (now - timedelta(hours=1)).astimezone(local).strftime("%H:%M:%S")
    return {"start": start, "end": end.astimezone(local).strftime("%H:%M:%S")}, end


def _sent(app: AppHandle, token: str) -> int:
    return len(app.stack.apns.requests(token))


def _delivery(
    app: AppHandle, message_id: str, registration_id: str, held: bool, timeout: float = 10
) -> DeliveryOut:
    """The Message's Delivery to the registration once it is held (QUEUED with a time to
    wait for) or final."""
    deadline = time.monotonic() + timeout
    while True:
        items = app.client.deliveries(message_id).items
        d = next((i for i in items if i.registration_id == registration_id), None)
        if d is not None and (d.next_attempt_at is not None if held else d.status != "QUEUED"):
            return d
        assert time.monotonic() < deadline, f"no {'held' if held else 'final'} delivery: {d}"
        time.sleep(0.05)


def test_a_campaign_push_waits_out_quiet_hours_and_goes_out_when_they_end(
    app: AppHandle,
) -> None:
    sleeper = app.ios("sleeper", time_zone=ZONE)
    awake = app.ios("awake", time_zone=ELSEWHERE)
    quiet, end = _quiet_until(8)  # room for a loaded machine to fan out first
    body = {"target": {"type": "application"}, "payload": ALERT, "quiet_hours": quiet}
    campaign = app.client.push(body).id
    sleepers = app.registration_for(sleeper, "sleeper")
    held = _delivery(app, campaign, sleepers, held=True)
    assert held.status == "QUEUED" and held.next_attempt_at == end
    assert held.provider_message is not None and held.provider_message.startswith("held: quiet")
    # A device whose local time is outside the quiet hours has it at once.
    awakes = app.registration_for(awake, "awake")
    assert _delivery(app, campaign, awakes, held=False).status == "SENT"
    assert _sent(app, awake) == 1
    assert datetime.now(UTC) < end and _sent(app, sleeper) == 0  # still quiet, nothing sent
    done = app.wait(campaign, timeout=30)
    assert done.by_status == {"SENT": 2}
    assert _sent(app, sleeper) == 1 and _sent(app, awake) == 1
    sent = _delivery(app, campaign, sleepers, held=False)
    assert sent.sent_at is not None and sent.sent_at >= end


def test_app_quiet_hours_hold_campaigns_but_never_a_priority_push(app: AppHandle) -> None:
    sleeper = app.ios("sleeper", time_zone=ZONE)
    quiet, end = _quiet_until(3600)
    assert app.stack.database_url
    update_app(
        engine_for(app.stack.database_url),
        Settings(),
        app.creds.app_id,
        AppUpdate(quiet_hours=QuietHours.model_validate(quiet)),
    )
    urgent = {
        "target": {"type": "users", "usernames": ["sleeper"]},
        "payload": {**ALERT, "priority": "high"},
    }
    assert app.wait(app.client.push(urgent).id).by_status == {"SENT": 1}
    assert _sent(app, sleeper) == 1
    # Quiet hours on the push itself would never hold it: said, not ignored.
    r = httpx.post(
        f"{app.stack.api_url}/v1/messages",
        headers={"X-API-Key": app.creds.api_key},
        json={**urgent, "quiet_hours": quiet},
    )
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "quiet_hours"
    campaign = app.client.push({"target": {"type": "application"}, "payload": ALERT}).id
    held = _delivery(app, campaign, app.registration_for(sleeper, "sleeper"), held=True)
    assert held.status == "QUEUED" and held.next_attempt_at == end
    assert app.client.message(campaign).state == "dispatched"
    assert _sent(app, sleeper) == 1  # only the priority push
