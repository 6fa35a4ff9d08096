"""Nothing accepted is lost: a worker killed mid-chunk, a broker or store that is down."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from producer import Unavailable, accept_push
from producer.api import create_app
from producer.stack import Stack
from schemas.db import engine_for, upgrade
from schemas.settings import Settings
from schemas.tables import Delivery, Message, utcnow
from tests.conftest import TEST_ENV, AppHandle, fresh_postgres, fresh_redis, log_tail, register_bulk

CHUNK = 50
WINDOW = 5  # PUSHLINE_SEND_CONCURRENCY: sent but not yet recorded, at most


def _one_worker_stack(path: Path, name: str, **settings: str) -> Stack:
    """A started stack whose one worker process sends at most WINDOW at a time."""
    env = {
        **TEST_ENV,
        **{f"PUSHLINE_{k.upper()}": v for k, v in settings.items()},
        "PUSHLINE_CHUNK_SIZE": str(CHUNK),
        "PUSHLINE_SEND_CONCURRENCY": str(WINDOW),
    }
    database = fresh_postgres(f"pushline_{name}_{uuid.uuid4().hex[:8]}")
    stack = Stack(path, fresh_redis(13), database, worker_concurrency=1, extra_env=env)
    return stack.start()


@pytest.fixture
def fragile_stack(tmp_path: Path) -> Iterator[Stack]:
    # Short leases and visibility so a killed worker's chunk comes back within seconds.
    stack = _one_worker_stack(tmp_path, "kill", lease_s="4", visibility_timeout_s="4")
    yield stack
    stack.stop()


def _broadcast_and_kill_the_worker_mid_chunk(
    stack: Stack, name: str, *, then_start: str = "worker"
) -> tuple[AppHandle, str, list[str]]:
    """300 devices, the worker SIGKILLed (its whole process group) once 10 were sent to,
    then a worker started (under its name, or another); returns (the app, the Message id,
    the tokens)."""
    app = AppHandle(stack, stack.add_app(name))
    tokens = register_bulk(stack, app.creds.app_id, 300)
    stack.apns.configure(latency_ms=100)  # a chunk takes ~1 s: long enough to die inside
    msg = app.client.push({"target": {"type": "application"}, "payload": {"alert": "x"}})
    deadline = time.monotonic() + 30
    while stack.apns.stats()["requests_total"] < 10:
        assert time.monotonic() < deadline, log_tail(stack, "worker")
        time.sleep(0.02)
    stack.kill("worker")
    assert stack.apns.stats()["requests_total"] < 300
    stack.apns.configure(latency_ms=0)
    stack.start_worker(then_start)
    return app, msg.id, tokens


def _assert_each_sent_once_but_what_was_on_the_wire(stack: Stack, tokens: list[str]) -> None:
    counts = [stack.apns.stats()["accepted"].get(t, 0) for t in tokens]
    assert min(counts) == 1  # every device got it
    twice = sum(1 for c in counts if c > 1)
    # Outcomes are recorded as they arrive: only what was on the wire is sent again.
    assert max(counts) <= 2 and twice <= WINDOW, (twice, max(counts))


def test_a_worker_killed_mid_chunk_loses_nothing_and_resends_at_most_its_send_window(
    fragile_stack: Stack,
) -> None:
    app, message_id, tokens = _broadcast_and_kill_the_worker_mid_chunk(fragile_stack, "kill")
    st = app.wait(message_id, timeout=90)
    assert (st.state, st.by_status) == ("done", {"SENT": 300})
    _assert_each_sent_once_but_what_was_on_the_wire(fragile_stack, tokens)


def test_a_process_is_taken_as_dead_only_when_silent_on_two_looks_far_enough_apart() -> None:
    from schemas.liveness import CONFIRM_S, STALE_AFTER_S, confirm_silence, silent

    now = 1_000.0
    beats = {"vm:1": now - STALE_AFTER_S - 1, "vm:2": now - 1}
    assert silent(beats, now) == {"vm:1"}
    dead, suspects = confirm_silence({}, {"vm:1"}, now)
    assert (dead, suspects) == (set(), {"vm:1": now})  # first seen silent: a suspect
    dead, suspects = confirm_silence(suspects, {"vm:1"}, now + CONFIRM_S / 2)
    assert dead == set()  # after a Redis outage, live processes need time to beat again
    dead, suspects = confirm_silence(suspects, {"vm:1"}, now + CONFIRM_S)
    assert (dead, suspects) == ({"vm:1"}, {})
    _, suspects = confirm_silence({"vm:3": now}, set(), now + 1)
    assert suspects == {}  # it beat again: no longer suspected


def test_a_worker_restarted_under_its_name_is_a_process_gone() -> None:
    from schemas.liveness import Beat, replaced

    old = Beat(name="w@vm", role="worker", at=10.0, pid=100, host="vm")
    same = Beat(name="w@vm", role="worker", at=15.0, pid=100, host="vm")
    restarted = Beat(name="w@vm", role="worker", at=16.0, pid=222, host="vm")
    assert replaced({"w@vm": old}, [same]) == []
    assert replaced({"w@vm": old}, [restarted]) == [old]
    assert replaced({"w@vm": old}, []) == []  # silent, not replaced: judged by silence


@pytest.mark.parametrize("clean", [False, True])
def test_a_worker_back_under_its_name_is_recovered_from_unless_it_stopped_cleanly(
    clean: bool,
) -> None:
    from dataclasses import replace

    from schemas import liveness
    from worker.liveness import ProcessWatch

    prefix = f"{TEST_ENV['PUSHLINE_REDIS_KEY_PREFIX']}restart-{uuid.uuid4().hex[:8]}:"
    settings = Settings(redis_url=fresh_redis(13), redis_key_prefix=prefix)
    r = liveness.client(settings)
    old = liveness.process_beat("worker", "w@vm", ["pushline"])
    liveness.beat(r, settings, old)
    watch = ProcessWatch(settings)
    assert watch.look().restore_before is None  # first look: nothing was lost
    if clean:
        liveness.forget_beat(r, settings, old)  # what a worker's clean stop does
    liveness.beat(r, settings, replace(old, pid=old.pid + 1, at=time.time()))
    lost = watch.look()
    if clean:
        assert lost.restore_before is None
    else:
        assert lost.restore_before is not None and lost.queues == {"pushline"}
    assert watch.look().restore_before is None  # each loss is reported once


def test_a_silent_holders_leases_are_freed_and_queued_but_not_those_of_a_new_process_by_its_name(
    tmp_path: Path,
) -> None:
    from datetime import timedelta

    from producer.apps import create_app as create_tenant
    from worker.recovery import release_leases

    url = f"sqlite:///{tmp_path / 'p.db'}"
    upgrade(url)
    engine = engine_for(url)
    app_id = create_tenant(engine, "holders-release").id
    now, settings = utcnow(), Settings(database_url=url, lease_s=120)
    last_beat = (now - timedelta(seconds=30)).timestamp()  # silent for 30 s
    leases = {
        "in-flight": ("vm:7", now + timedelta(seconds=90)),  # taken before it fell silent
        "other": ("vm:8", now + timedelta(seconds=90)),  # a live process's
        "new-pid": ("vm:7", now + timedelta(seconds=119)),  # taken just now by a new vm:7
        "expired": ("vm:7", now - timedelta(seconds=1)),  # free already: the sweep's
    }
    with Session(engine) as s:
        message = Message(
            app_id=app_id, target={"type": "application"}, payload={}, lane="priority"
        )
        s.add(message)
        s.flush()
        for rid, (holder, until) in leases.items():
            s.add(
                Delivery(
                    id=rid,
                    message_id=message.id,
                    registration_id=rid,
                    app_id=app_id,
                    provider="apns",
                    lease_until=until,
                    leased_by=holder,
                )
            )
        s.commit()
    queued: list[tuple[str, list[str], str]] = []
    freed = release_leases(
        engine,
        settings,
        {"vm:7": last_beat},
        now,
        lambda provider, ids, lane: queued.append((provider, ids, lane)),
    )
    assert (freed, queued) == (1, [("apns", ["in-flight"], "priority")])
    with Session(engine) as s:
        leased = {d.id for d in s.execute(select(Delivery)).scalars() if d.lease_until}
    assert leased == {"other", "new-pid", "expired"}


def test_only_due_tasks_of_the_dead_workers_queues_are_handed_out_again() -> None:
    import json

    from worker.celery_app import lost_with_its_worker

    def entry(queue: str, eta: str | None) -> str:
        message = {"headers": {"task": "pushline.deliver", "eta": eta}, "body": "e30="}
        return json.dumps([message, "", queue])

    now = 1_800_000_000.0  # 2027-01-15T08:00:00Z
    dead = frozenset({"pushline", "pushline.priority"})
    assert lost_with_its_worker(entry("pushline", None), dead, now)
    assert lost_with_its_worker(entry("pushline", "2027-01-15T07:59:00+00:00"), dead, now)
    # a retry's backoff or a quiet-hours hold still to come: it must not run early
    assert not lost_with_its_worker(entry("pushline", "2027-01-15T09:00:00+00:00"), dead, now)
    assert not lost_with_its_worker(entry("pushline.webhooks", None), dead, now)
    assert not lost_with_its_worker(b"not json", dead, now)


@pytest.mark.parametrize("then_start", ["worker", "another-worker"])
def test_a_killed_workers_leases_and_tasks_are_handed_out_again_once_it_stops_beating(
    tmp_path: Path, then_start: str
) -> None:
    """Leases, the broker's visibility timeout and the sweep's grace all an hour long: only
    the scheduler seeing the killed worker's processes stop beating can explain the
    broadcast finishing within minutes, whether the worker comes back under its name (a
    restart) or another worker takes over (its beat then goes silent)."""
    hour = "3600"
    settings = {"lease_s": hour, "visibility_timeout_s": hour, "sweep_grace_s": hour}
    stack = _one_worker_stack(tmp_path, "holders", **settings)
    try:
        app, message_id, tokens = _broadcast_and_kill_the_worker_mid_chunk(
            stack, "holders", then_start=then_start
        )
        st = app.wait(message_id, timeout=120)
        assert (st.state, st.by_status) == ("done", {"SENT": 300}), log_tail(stack, "scheduler")
        scheduler_log = (tmp_path / "scheduler.log").read_text()
        assert "released the leases of a worker process that stopped" in scheduler_log
        assert "handed out again the tasks a stopped worker had taken" in scheduler_log
        _assert_each_sent_once_but_what_was_on_the_wire(stack, tokens)
    finally:
        stack.stop()


def test_broker_down_is_503_and_nothing_is_persisted(tmp_path: Path) -> None:
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0",  # nothing listens on port 1
        database_url=f"sqlite:///{tmp_path / 'p.db'}",
    )
    from fastapi.testclient import TestClient

    from producer.apps import create_app as create_tenant
    from producer.apps import create_key

    api = create_app(settings)
    engine = engine_for(settings.database_url)
    tenant = create_tenant(engine, "broker-down")
    key, _ = create_key(engine, tenant.id, ["push_all"])
    r = TestClient(api).post(
        "/v1/messages",
        headers={"X-API-Key": key},
        json={"target": {"type": "application"}, "payload": {"alert": "x"}},
    )
    assert r.status_code == 503
    assert "queue is unavailable" in r.json()["message"]
    with Session(engine) as s:
        assert s.execute(select(func.count()).select_from(Message)).scalar_one() == 0


def test_store_down_is_503_with_a_clear_message(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    good = Settings(redis_url=fresh_redis(14), database_url=f"sqlite:///{tmp_path / 'p.db'}")
    api = create_app(good)
    from producer.apps import create_app as create_tenant
    from producer.apps import create_key

    engine = engine_for(good.database_url)
    key, _ = create_key(engine, create_tenant(engine, "store-down").id, ["push_all"])
    # The API's store disappears: point its engine at a PostgreSQL port where nothing listens.
    api.state.keys.engine = engine_for("postgresql://postgres@127.0.0.1:1/none")
    api.state.keys._cache.clear()
    r = TestClient(api).post(
        "/v1/messages",
        headers={"X-API-Key": key},
        json={"target": {"type": "application"}, "payload": {"alert": "x"}},
    )
    assert r.status_code == 503
    assert r.json()["error"] == "unavailable"


def test_a_python_service_enqueues_with_the_same_function_as_the_api(stack: Stack) -> None:
    app = AppHandle(stack, stack.add_app(f"py-{uuid.uuid4().hex[:8]}"))
    token = app.ios("sam")
    assert stack.redis_url and stack.database_url
    settings = Settings(
        redis_url=stack.redis_url,
        database_url=stack.database_url,
        redis_key_prefix=TEST_ENV["PUSHLINE_REDIS_KEY_PREFIX"],
    )
    accepted = accept_push(
        app.creds.app_id,
        {
            "target": {"type": "users", "usernames": ["sam"]},
            "payload": {"alert": {"title": "from python"}},
        },
        settings=settings,
    )
    st = app.wait(accepted.message_id)
    assert st.by_code == {"0": 1}
    assert stack.apns.requests(token)[0]["body"]["aps"]["alert"] == {"title": "from python"}
    with pytest.raises(Exception, match="payload"):
        accept_push(app.creds.app_id, {"target": {"type": "application"}}, settings=settings)


def test_accept_push_raises_unavailable_when_the_broker_is_down(tmp_path: Path) -> None:
    from schemas.db import upgrade

    settings = Settings(
        redis_url="redis://127.0.0.1:1/0", database_url=f"sqlite:///{tmp_path / 'p.db'}"
    )
    upgrade(settings.database_url)
    from producer.apps import create_app as create_tenant

    tenant = create_tenant(engine_for(settings.database_url), "down")
    with pytest.raises(Unavailable):
        accept_push(
            tenant.id,
            {"target": {"type": "application"}, "payload": {"alert": "x"}},
            settings=settings,
        )
    with Session(engine_for(settings.database_url)) as s:
        assert s.execute(select(func.count()).select_from(Message)).scalar_one() == 0
        assert s.execute(select(func.count()).select_from(Delivery)).scalar_one() == 0
    assert utcnow()
