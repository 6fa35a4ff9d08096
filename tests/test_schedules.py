"""Scheduled, repeating and cron publishes: the rules in time, and a real scheduler."""

from __future__ import annotations

import threading
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

import httpx
import pytest
import time_machine
from sqlalchemy import func, select
from sqlmodel import Session, col

from producer.accept import accept_push
from producer.apps import create_app as create_tenant
from producer.errors import InvalidRequest
from producer.stack import Stack
from schemas.api import ScheduleSpec
from schemas.db import engine_for, upgrade
from schemas.scheduling import ScheduleError, next_run, plan
from schemas.settings import Settings
from schemas.tables import Message, Schedule, utcnow
from tests.conftest import AppHandle, fresh_postgres
from worker.scheduler import publish_due

NOW = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)


def ms(t: datetime) -> int:
    return int(t.timestamp() * 1000)


# --- the rules (pure) ---------------------------------------------------------------------


def test_publish_at_in_the_past_is_5030() -> None:
    with pytest.raises(ScheduleError) as err:
        plan(ScheduleSpec(publish_at=ms(NOW) - 1000), NOW, repeat_every_min_s=60)
    assert (err.value.code, err.value.rule) == (5030, "Invalid publishAt date")


def test_repeat_expires_at_not_after_the_first_run_is_5003() -> None:
    spec = ScheduleSpec(
        publish_at=ms(NOW) + 60_000, repeat_every=60, repeat_expires_at=ms(NOW) + 60_000
    )
    with pytest.raises(ScheduleError) as err:
        plan(spec, NOW, repeat_every_min_s=60)
    assert (err.value.code, err.value.rule) == (5003, "Invalid repeatExpiresAt date")


def test_repeat_every_below_the_minimum_is_refused() -> None:
    with pytest.raises(ScheduleError, match="at least 60 seconds"):
        plan(ScheduleSpec(repeat_every=5), NOW, repeat_every_min_s=60)


@pytest.mark.parametrize(
    ("spec", "words"),
    [
        (ScheduleSpec(cron="61 * * * *"), "not a valid cron"),
        (ScheduleSpec(cron="0 9 * * *", timezone="Mars/Olympus"), "unknown time zone"),
        (ScheduleSpec(cron="0 9 * * *", repeat_every=60), "not both"),
        (ScheduleSpec(repeat_expires_at=ms(NOW) + 1000), "needs repeat_every or cron"),
    ],
)
def test_other_bad_schedules_name_the_rule(spec: ScheduleSpec, words: str) -> None:
    with pytest.raises(ScheduleError, match=words):
        plan(spec, NOW, repeat_every_min_s=60)


def test_backendless_milliseconds_and_iso_times_mean_the_same_instant() -> None:
    a = plan(ScheduleSpec(publish_at=ms(NOW) + 3_600_000), NOW, repeat_every_min_s=1)
    b = plan(ScheduleSpec(publish_at=NOW + timedelta(hours=1)), NOW, repeat_every_min_s=1)
    assert a.first_run_at == b.first_run_at == NOW + timedelta(hours=1)
    assert a.kind == "once"


def test_cron_runs_in_its_time_zone_across_a_dst_change() -> None:
    # Europe/Copenhagen moves to summer time on 2026-03-29: 09:00 local is 08:00 then 07:00 UTC.
    p = plan(
        ScheduleSpec(cron="0 9 * * *", timezone="Europe/Copenhagen"), NOW, repeat_every_min_s=60
    )
    assert p.first_run_at == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)
    with time_machine.travel(datetime(2026, 3, 28, 7, 30, tzinfo=UTC)):
        first = plan(
            ScheduleSpec(cron="0 9 * * *", timezone="Europe/Copenhagen"),
            utcnow(),
            repeat_every_min_s=60,
        ).first_run_at
    assert first == datetime(2026, 3, 28, 8, 0, tzinfo=UTC)
    after = next_run(
        "cron",
        first,
        first,
        repeat_every_s=None,
        repeat_expires_at=None,
        cron="0 9 * * *",
        timezone="Europe/Copenhagen",
    )
    assert after == datetime(2026, 3, 29, 7, 0, tzinfo=UTC)


def test_a_scheduler_that_was_down_publishes_a_missed_run_once_then_keeps_the_cadence() -> None:
    due = NOW
    back = NOW + timedelta(minutes=10, seconds=30)  # ten runs were missed
    nxt = next_run(
        "repeat", due, back, repeat_every_s=60, repeat_expires_at=None, cron=None, timezone="UTC"
    )
    assert nxt == NOW + timedelta(minutes=11)


def test_repeats_end_at_repeat_expires_at() -> None:
    nxt = next_run(
        "repeat",
        NOW,
        NOW,
        repeat_every_s=60,
        repeat_expires_at=NOW + timedelta(seconds=90),
        cron=None,
        timezone="UTC",
    )
    assert nxt == NOW + timedelta(seconds=60)
    last = next_run(
        "repeat",
        nxt,
        nxt,
        repeat_every_s=60,
        repeat_expires_at=NOW + timedelta(seconds=90),
        cron=None,
        timezone="UTC",
    )
    assert last is None


# --- claiming runs in the database ------------------------------------------------------


@pytest.fixture(params=["postgresql", "sqlite"])
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "postgresql":
        url = fresh_postgres(f"pushline_sched_{tmp_path.name[-8:].lower()}")
    else:
        url = f"sqlite:///{tmp_path / 's.db'}"
    upgrade(url)
    return url


def make_schedules(url: str, n: int, **kw: object) -> str:
    engine = engine_for(url)
    tenant = create_tenant(engine, f"sched-{time.monotonic_ns()}")
    with Session(engine) as s:
        s.add_all(
            Schedule(
                app_id=tenant.id,
                target={"type": "application"},
                payload={"alert": {}},
                kind="repeat",
                repeat_every_s=60,
                next_run_at=NOW,
                **kw,
            )  # type: ignore[arg-type]
            for _ in range(n)
        )
        s.commit()
    return tenant.id


def test_two_schedulers_at_once_never_publish_a_run_twice(store_url: str) -> None:
    make_schedules(store_url, 150)
    engine = engine_for(store_url)
    enqueued: list[str] = []
    lock = threading.Lock()

    def scheduler() -> None:
        for _ in range(20):
            ids = publish_due(engine, NOW + timedelta(seconds=1), lambda m, _lane: None, limit=25)
            with lock:
                enqueued.extend(ids)

    threads = [threading.Thread(target=scheduler) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    with Session(engine) as s:
        per_schedule = s.execute(
            select(col(Message.schedule_id), func.count()).group_by(col(Message.schedule_id))
        ).all()
        nexts = set(s.execute(select(col(Schedule.next_run_at))).scalars())
    assert len(per_schedule) == 150 and {n for _, n in per_schedule} == {1}
    assert len(enqueued) == len(set(enqueued)) == 150
    assert {n.replace(tzinfo=UTC) if n.tzinfo is None else n for n in nexts} == {
        NOW + timedelta(seconds=60)
    }


def test_a_paused_or_cancelled_schedule_publishes_nothing(store_url: str) -> None:
    make_schedules(store_url, 2, state="paused")
    make_schedules(store_url, 1, state="cancelled")
    assert publish_due(engine_for(store_url), NOW + timedelta(hours=1), lambda m, _l: None) == []


# --- the API and a real scheduler --------------------------------------------------------


def test_a_scheduled_push_answers_202_scheduled_with_its_next_run(app: AppHandle) -> None:
    at = utcnow() + timedelta(hours=2)
    r = httpx.post(
        f"{app.stack.api_url}/v1/messages",
        headers={"X-API-Key": app.creds.api_key},
        json={
            "target": {"type": "application"},
            "payload": {"alert": "later"},
            "schedule": {"publish_at": ms(at)},
        },
    )
    assert r.status_code == 202, r.text
    body = r.json()
    assert body["state"] == "scheduled" and body["status_url"] == f"/v1/schedules/{body['id']}"
    assert abs(datetime.fromisoformat(body["next_run_at"]) - at) < timedelta(milliseconds=1)
    got = httpx.get(
        f"{app.stack.api_url}/v1/schedules/{body['id']}", headers={"X-API-Key": app.creds.api_key}
    ).json()
    assert (got["state"], got["kind"], got["runs"], got["message_ids"]) == (
        "scheduled",
        "once",
        0,
        [],
    )


@pytest.mark.parametrize(
    ("schedule", "code", "field"),
    [
        ({"publish_at": 1_000}, 5030, "schedule.publish_at"),
        (
            {
                "repeat_every": 60,
                "publish_at": 4_102_444_800_000,
                "repeat_expires_at": 4_102_444_800_000,
            },
            5003,
            "schedule.repeat_expires_at",
        ),
        ({"repeat_every": 0}, None, "schedule.repeat_every"),
    ],
)
def test_schedule_errors_carry_the_backendless_codes(
    app: AppHandle, schedule: dict[str, object], code: int | None, field: str
) -> None:
    r = httpx.post(
        f"{app.stack.api_url}/v1/messages",
        headers={"X-API-Key": app.creds.api_key},
        json={"target": {"type": "application"}, "payload": {"alert": "x"}, "schedule": schedule},
    )
    assert r.status_code == 400
    assert r.json().get("code") == code and r.json()["details"][0]["field"] == field


def test_a_real_scheduler_publishes_a_one_second_repeat_once_a_second(app: AppHandle) -> None:
    token = app.ios("rep")
    start = utcnow()
    accepted = app.client.push(
        {
            "target": {"type": "users", "usernames": ["rep"]},
            "payload": {"alert": "tick"},
            "schedule": {
                "repeat_every": 1,
                "repeat_expires_at": ms(start + timedelta(seconds=3.5)),
            },
        }
    )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        got = httpx.get(
            f"{app.stack.api_url}/v1/schedules/{accepted.id}",
            headers={"X-API-Key": app.creds.api_key},
        ).json()
        if got["state"] == "finished":
            break
        time.sleep(0.2)
    # runs at +0, +1, +2, +3 s; +4 s is past the expiry
    assert (got["state"], got["runs"], len(got["message_ids"])) == ("finished", 4, 4)
    for mid in got["message_ids"]:
        assert app.wait(mid).by_code == {"0": 1}
    assert app.stack.apns.stats()["accepted"][token] == 4


def test_pause_resume_and_cancel_over_rest(app: AppHandle) -> None:
    sid = app.client.push(
        {
            "target": {"type": "application"},
            "payload": {"alert": "x"},
            "schedule": {"cron": "0 9 * * 1", "timezone": "Europe/Berlin"},
        }
    ).id
    h = {"X-API-Key": app.creds.api_key}
    base = f"{app.stack.api_url}/v1/schedules/{sid}"
    assert httpx.post(f"{base}/pause", headers=h).json()["state"] == "paused"
    assert httpx.post(f"{base}/pause", headers=h).status_code == 409
    resumed = httpx.post(f"{base}/resume", headers=h).json()
    assert resumed["state"] == "scheduled" and resumed["next_run_at"]
    assert httpx.delete(base, headers=h).json()["state"] == "cancelled"
    listed = httpx.get(f"{app.stack.api_url}/v1/schedules?state=cancelled", headers=h).json()
    assert [s["id"] for s in listed["items"]] == [sid]


def test_accept_push_refuses_a_schedule_in_the_past_before_writing_anything(
    stack: Stack,
) -> None:
    assert stack.database_url and stack.redis_url
    settings = Settings(database_url=stack.database_url, redis_url=stack.redis_url)
    tenant = create_tenant(engine_for(stack.database_url), f"past-{time.monotonic_ns()}")
    with pytest.raises(InvalidRequest) as err:
        accept_push(
            tenant.id,
            {
                "target": {"type": "application"},
                "payload": {"alert": "x"},
                "schedule": {"publish_at": "2020-01-01T00:00:00Z"},
            },
            settings=settings,
        )
    assert err.value.code == 5030
    with Session(engine_for(stack.database_url)) as s:
        n = s.execute(
            select(func.count()).select_from(Schedule).where(col(Schedule.app_id) == tenant.id)
        ).scalar_one()
    assert n == 0
