"""Local-time runs: each device gets a run at the schedule's local time in its own zone
(or its app's), once; devices whose time had passed get the next day's or none."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo

import httpx
import pytest
from sqlalchemy import text

from producer.apps import update_app
from schemas.admin import AppUpdate
from schemas.api import ScheduleSpec
from schemas.db import engine_for
from schemas.localtime import Quiet, local_run, quiet_until, release_groups
from schemas.scheduling import plan
from schemas.settings import Settings
from tests.conftest import AppHandle

ALERT = {"alert": {"title": "t", "body": "good morning"}}
NEAR = "Asia/Kathmandu"  # +05:45: the zone whose local time is a few seconds away
EAST = "Pacific/Auckland"  # ahead of NEAR: that local time passed hours ago there
WEST = "America/New_York"  # behind NEAR: that local time is hours away there
LEAD_S = 6  # NEAR reaches the run's local time this long after it is scheduled


def _set_default_zone(app: AppHandle, zone: str) -> None:
    assert app.stack.database_url
    engine = engine_for(app.stack.database_url)
    update_app(engine, Settings(), app.creds.app_id, AppUpdate(timezone=zone))


def _local_run(app: AppHandle, missed: str) -> tuple[str, datetime]:
    """A schedule for the local time NEAR reaches in LEAD_S; returns the run's Message id and
    that instant."""
    soon = datetime.now(UTC) + timedelta(seconds=LEAD_S)
    at = soon.astimezone(ZoneInfo(NEAR)).strftime("%H:%M:%S")
    body = {
        "target": {"type": "application"},
        "payload": ALERT,
        "schedule": {"local_time": at, "timezone": NEAR, "local_time_missed": missed},
    }
    schedule_id = app.client.push(body).id
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        r = httpx.get(
            f"{app.stack.api_url}/v1/schedules/{schedule_id}",
            headers={"X-API-Key": app.creds.api_key},
        ).json()
        if r["message_ids"]:
            assert r["local_time"] == at and r["local_time_missed"] == missed
            return r["message_ids"][0], soon.replace(microsecond=0)
        time.sleep(0.1)
    raise AssertionError("the scheduler did not start the run")


def _sent(app: AppHandle, token: str) -> int:
    return len(app.stack.apns.requests(token))


def _wait_sent(app: AppHandle, tokens: list[str], timeout: float = 20) -> None:
    deadline = time.monotonic() + timeout
    while any(_sent(app, t) == 0 for t in tokens):
        assert time.monotonic() < deadline, "the zone's share was not delivered"
        time.sleep(0.1)


@pytest.mark.parametrize("missed", ["next_day", "skip"])
def test_each_device_gets_the_run_at_its_own_local_time_once(
    any_app: AppHandle, missed: str
) -> None:
    app = any_app  # PostgreSQL and SQLite
    _set_default_zone(app, NEAR)
    near = app.ios("near", time_zone=NEAR)
    no_zone = app.ios("no-zone")  # the app's default zone: NEAR
    east = app.ios("east", time_zone=EAST)
    west = app.ios("west", time_zone=WEST)
    message_id, at = _local_run(app, missed)
    # Before NEAR reaches the time nobody has it; the run waits, zone by zone.
    status = app.client.message(message_id)
    assert status.state == "accepted"
    assert [_sent(app, t) for t in (near, no_zone, east, west)] == [0, 0, 0, 0]

    _wait_sent(app, [near, no_zone])
    time.sleep(1.5)  # more ticks of the scheduler: nothing is released twice
    assert [_sent(app, t) for t in (near, no_zone, east, west)] == [1, 1, 0, 0]
    status = app.client.message(message_id)
    assert status.state == "accepted" and status.total == 2
    assert status.by_status == {"SENT": 2}
    groups = {tuple(sorted(z or "" for z in g.zones)): g for g in status.releases}
    assert groups[("", NEAR)].state == "done" and groups[("", NEAR)].devices == 2
    assert groups[("", NEAR)].release_at == at
    local = at.astimezone(ZoneInfo(NEAR)).replace(tzinfo=None)  # the run's day and time
    later = groups[(WEST,)]
    assert later.state == "waiting"
    assert later.release_at == local.replace(tzinfo=ZoneInfo(WEST)).astimezone(UTC)
    passed = groups[(EAST,)]
    if missed == "skip":
        assert passed.state == "skipped" and passed.release_at is None
    else:  # tomorrow's, in its own zone
        tomorrow = (local + timedelta(days=1)).replace(tzinfo=ZoneInfo(EAST))
        assert passed.state == "waiting" and passed.release_at == tomorrow.astimezone(UTC)


def test_time_zones_and_local_times_are_checked_naming_the_field(app: AppHandle) -> None:
    url, headers = app.stack.api_url, {"X-API-Key": app.creds.api_key}
    r = httpx.post(
        f"{url}/v1/registrations",
        headers=headers,
        json={"token": "iOS:" + "ab" * 32, "time_zone": "Mars/Olympus"},
    )
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "time_zone"
    bad = [
        ({"local_time": "9am"}, "schedule.local_time"),
        ({"local_time": "25:00"}, "schedule.local_time"),
        ({"local_date": "2030-01-01"}, "schedule.local_date"),
        ({"local_time": "09:00", "local_date": "2020-01-01"}, "schedule.local_date"),
        ({"local_time": "09:00", "local_date": "9999-12-31"}, "schedule.local_date"),
        ({"local_time": "09:00", "publish_at": "9999-01-01T00:00:00Z"}, "schedule"),
        ({"local_time": "09:00", "local_time_missed": "never"}, "schedule.local_time_missed"),
        (
            {"local_time": "09:00", "local_date": "2030-01-01", "cron": "0 0 * * *"},
            "schedule.local_date",
        ),
    ]
    for schedule, field in bad:
        body = {"target": {"type": "application"}, "payload": ALERT, "schedule": schedule}
        r = httpx.post(f"{url}/v1/messages", headers=headers, json=body)
        assert r.status_code == 400, (schedule, r.text)
        assert r.json()["details"][0]["field"] == field, (schedule, r.text)


def test_a_dated_local_time_run_starts_when_the_first_zone_reaches_it(app: AppHandle) -> None:
    body = {
        "target": {"type": "application"},
        "payload": ALERT,
        "schedule": {"local_time": "09:00", "local_date": "2030-06-01"},
    }
    accepted = app.client.push(body)
    # 09:00 on 1 June 2030 in UTC+14 (Pacific/Kiritimati) is 19:00 UTC the day before.
    assert accepted.next_run_at == datetime(2030, 5, 31, 19, 0, tzinfo=UTC)


def test_quiet_hours_end_on_the_next_day_when_they_wrap_midnight() -> None:
    night = Quiet.of({"start": "22:00", "end": "08:00"})
    assert night is not None
    berlin = ZoneInfo("Europe/Berlin")
    at_23 = datetime(2026, 12, 6, 22, 0, tzinfo=UTC)  # 23:00 in Berlin
    assert quiet_until(at_23, berlin, night) == datetime(2026, 12, 7, 7, 0, tzinfo=UTC)
    at_7 = datetime(2026, 12, 7, 6, 0, tzinfo=UTC)  # 07:00 in Berlin
    assert quiet_until(at_7, berlin, night) == datetime(2026, 12, 7, 7, 0, tzinfo=UTC)
    assert quiet_until(datetime(2026, 12, 7, 12, 0, tzinfo=UTC), berlin, night) is None
    assert Quiet.of({"start": "00:00", "end": "00:00"}) is None


def test_a_released_group_whose_fan_out_was_lost_is_fanned_out_by_the_sweep(
    app: AppHandle,
) -> None:
    _set_default_zone(app, NEAR)
    west = app.ios("west", time_zone=WEST)
    near = app.ios("near", time_zone=NEAR)
    message_id, _ = _local_run(app, "next_day")
    _wait_sent(app, [near])
    # As if the worker fanning out the WEST group died ten minutes ago, before writing any
    # of its Deliveries (its time has not come: only the sweep can send it now).
    assert app.stack.database_url
    with engine_for(app.stack.database_url).begin() as conn:
        taken = conn.execute(
            text(
                "UPDATE message_release SET state = 'fanning', released_at = :at "
                "WHERE message_id = :m AND state = 'waiting'"
            ),
            {"at": datetime.now(UTC) - timedelta(minutes=10), "m": message_id},
        ).rowcount
    assert taken == 1
    _wait_sent(app, [west], timeout=40)  # the sweep runs every 15 s
    status = app.wait(message_id)
    assert status.by_status == {"SENT": 2} and status.state == "done"
    assert [_sent(app, t) for t in (near, west)] == [1, 1]
    assert {g.state for g in status.releases} == {"done"}


def test_cancelling_a_local_time_run_closes_the_groups_still_to_come(app: AppHandle) -> None:
    west = app.ios("west", time_zone=WEST)
    message_id, _ = _local_run(app, "next_day")
    deadline = time.monotonic() + 10
    while not app.client.message(message_id).releases:  # planned by its fan-out
        assert time.monotonic() < deadline
        time.sleep(0.05)
    r = httpx.post(
        f"{app.stack.api_url}/v1/messages/{message_id}/cancel",
        headers={"X-API-Key": app.creds.api_key},
    )
    assert r.status_code == 200, r.text
    status = app.client.message(message_id)
    assert status.state == "cancelled"
    assert [(g.zones, g.state) for g in status.releases] == [([WEST], "cancelled")]
    assert _sent(app, west) == 0


def test_a_cron_local_time_run_is_for_the_date_of_its_slot_in_the_schedules_zone() -> None:
    now = datetime(2026, 12, 6, 9, 0, tzinfo=UTC)
    spec = ScheduleSpec(cron="0 0 * * *", timezone="Pacific/Kiritimati", local_time="08:00")
    p = plan(spec, now, repeat_every_min_s=60)
    # Midnight at UTC+14 is 10:00 UTC the day before: every zone's 08:00 is still to come.
    assert p.kind == "cron" and p.first_run_at == datetime(2026, 12, 6, 10, 0, tzinfo=UTC)
    assert p.local_time == {"at": "08:00", "date": None, "missed": "next_day"}
    run = local_run(p.local_time, p.first_run_at, spec.timezone)
    assert run == {"at": "08:00", "day": "2026-12-07", "missed": "next_day"}
    groups = release_groups(
        [("Pacific/Kiritimati", 1), ("Europe/Berlin", 2), (None, 3)], "UTC", run, p.first_run_at
    )
    assert [(g.release_at, g.zones) for g in groups] == [
        (datetime(2026, 12, 6, 18, 0, tzinfo=UTC), ["Pacific/Kiritimati"]),
        (datetime(2026, 12, 7, 7, 0, tzinfo=UTC), ["Europe/Berlin"]),
        (datetime(2026, 12, 7, 8, 0, tzinfo=UTC), [None]),
    ]
