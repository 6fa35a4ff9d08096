"""The scheduler process: publishes due Schedules and runs the recovery sweep.

Schedules are durable rows, not Celery ETAs. Each tick claims due rows and writes one
Message per run in the same transaction as it moves `next_run_at` on:

- PostgreSQL: candidates are read `FOR UPDATE SKIP LOCKED`, so two schedulers never wait
  on or take the same row;
- SQLite (no SKIP LOCKED; writers are serialised): the move of `next_run_at` is a
  compare-and-set on the value that was read, so only one scheduler wins a run;
- on both, a unique (schedule_id, run_at) on Message makes a second publication of the
  same run impossible.

Run it with `pushline scheduler` (the Procfile's `scheduler`).
"""

from __future__ import annotations

import os
import signal
import socket
import threading
import time
from collections.abc import Callable
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Engine, select, update
from sqlmodel import Session, col

from schemas.campaigns import campaign_columns
from schemas.codes import MessageState
from schemas.localtime import latest_release, local_run
from schemas.metrics import RECOVERED, SCHEDULE_RUNS
from schemas.retention import prune_some
from schemas.scheduling import next_run
from schemas.settings import Settings
from schemas.tables import Message, Schedule, utcnow
from worker.liveness import BrokerWatch, Heartbeat, ProcessWatch, serve
from worker.releases import release_due

log = structlog.get_logger("pushline.scheduler")

FanoutEnqueuer = Callable[[str, str], None]  # (message id, lane)


def run_expiry(payload: dict[str, object], now: datetime) -> datetime | None:
    """A run's life: its time to live from now, or the payload's absolute expiration."""
    if isinstance(payload.get("expiration"), str):
        return datetime.fromisoformat(str(payload["expiration"]))
    ttl = payload.get("time_to_live")
    return now + timedelta(seconds=ttl) if isinstance(ttl, int) else None


def publish_due(
    engine: Engine, now: datetime, enqueue: FanoutEnqueuer, *, limit: int = 100
) -> list[str]:
    """Publish every run due at `now` once; returns the ids of the Messages written."""
    published: list[tuple[str, str]] = []
    with Session(engine) as s, s.begin():
        q = (
            select(Schedule)
            .where(col(Schedule.state) == "scheduled", col(Schedule.next_run_at) <= now)
            .order_by(col(Schedule.next_run_at))
            .limit(limit)
        )
        if s.get_bind().dialect.name == "postgresql":
            q = q.with_for_update(skip_locked=True)
        for sch in s.execute(q).scalars().all():
            due = sch.next_run_at
            assert due is not None
            nxt = next_run(
                sch.kind,
                due,
                now,
                repeat_every_s=sch.repeat_every_s,
                repeat_expires_at=sch.repeat_expires_at,
                cron=sch.cron,
                timezone=sch.timezone,
            )
            won = s.execute(
                update(Schedule)
                .where(
                    col(Schedule.id) == sch.id,
                    col(Schedule.next_run_at) == due,
                    col(Schedule.state) == "scheduled",
                )
                .values(
                    next_run_at=nxt,
                    state="scheduled" if nxt is not None else "finished",
                    runs=col(Schedule.runs) + 1,
                    last_run_at=due,
                    updated_at=now,
                )
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
            if not won:
                continue  # another scheduler published this run
            message = Message(
                app_id=sch.app_id,
                target=sch.target,
                payload=sch.payload,
                state=MessageState.ACCEPTED,
                lane=sch.lane,
                schedule_id=sch.id,
                run_at=due,
                created_at=now,
                **campaign_columns(sch.campaign or {}),
            )
            message.expires_at = run_expiry(sch.payload, now)
            if sch.local_time:
                message.local_time = local_run(sch.local_time, due, sch.timezone)
                # A run spans its zones' day: a time to live counts from its last release.
                message.expires_at = run_expiry(sch.payload, latest_release(message.local_time))
            s.add(message)
            s.flush()
            published.append((message.id, sch.lane))
            log.info(
                "schedule run published",
                schedule=sch.id,
                message=message.id,
                run_at=due.isoformat(),
                next_run_at=nxt.isoformat() if nxt else None,
            )
    for message_id, lane in published:
        try:
            enqueue(message_id, lane)
        except Exception as exc:  # the recovery sweep fans it out once the broker is back
            log.warning(
                "fan-out not enqueued; the sweep will retry", message=message_id, error=str(exc)
            )
    return [m for m, _ in published]


def run(
    settings: Settings,
    engine: Engine,
    enqueue_fanout: FanoutEnqueuer,
    enqueue_chunk: Callable[[str, list[str], str], None],
    stop: threading.Event,
    watch: BrokerWatch | None = None,
    processes: ProcessWatch | None = None,
    restore_unacked: Callable[[float, frozenset[str]], int] | None = None,
) -> None:
    from worker.recovery import sweep

    last_sweep = 0.0
    while not stop.is_set():
        try:
            published = publish_due(engine, utcnow(), enqueue_fanout)
            SCHEDULE_RUNS.inc(len(published))
            release_due(engine, utcnow(), enqueue_fanout)  # local-time runs' zone groups
            lost_at = None
            if watch is not None:
                watch.look()
                lost_at = watch.recovery_due()
            if lost_at or time.monotonic() - last_sweep >= settings.sweep_interval_s:
                last_sweep = time.monotonic()
                sweep(
                    engine,
                    settings,
                    utcnow(),
                    enqueue_fanout,
                    enqueue_chunk,
                    consumed=watch.consumed() if watch is not None else None,
                    lost_at=lost_at,
                )
                if lost_at and watch is not None:
                    watch.recovered()
            if settings.retention_days:
                prune_some(engine, settings)
        except Exception:
            log.exception("scheduler tick failed; trying again next tick")
        if processes is not None:
            try:
                recover_lost_processes(settings, engine, enqueue_chunk, processes, restore_unacked)
            except Exception:
                log.exception("recovering a stopped process's work failed; trying again")
        stop.wait(settings.scheduler_tick_s)


def recover_lost_processes(
    settings: Settings,
    engine: Engine,
    enqueue_chunk: Callable[[str, list[str], str], None],
    processes: ProcessWatch,
    restore_unacked: Callable[[float, frozenset[str]], int] | None,
) -> None:
    """What processes that died held: their leased rows, and their workers' tasks that the
    broker would otherwise keep for its visibility timeout."""
    from worker.recovery import release_leases

    lost = processes.look()
    if lost.restore_before is not None and restore_unacked is not None:
        restored = restore_unacked(lost.restore_before, lost.queues)
        if restored:
            RECOVERED.labels("task").inc(restored)
            log.warning("handed out again the tasks a stopped worker had taken", tasks=restored)
    if lost.holders:
        release_leases(engine, settings, lost.holders, utcnow(), enqueue_chunk)
        processes.forget(lost.holders)


def main() -> None:
    from schemas.db import engine_for
    from schemas.heap import settle_heap
    from schemas.logs import configure_logging
    from schemas.settings import get_settings
    from worker.celery_app import enqueue_chunk, enqueue_fanout, restore_unacked

    settings = get_settings()
    configure_logging(settings.log_level, settings.log_json)
    heartbeat = Heartbeat(settings, "scheduler", f"scheduler@{socket.gethostname()}:{os.getpid()}")
    heartbeat.start()
    if settings.metrics_port:
        serve(settings.metrics_port, heartbeat.health)
    stop = threading.Event()
    signal.signal(signal.SIGTERM, lambda *_: stop.set())
    signal.signal(signal.SIGINT, lambda *_: stop.set())
    log.info(
        "scheduler started",
        tick_s=settings.scheduler_tick_s,
        sweep_interval_s=settings.sweep_interval_s,
    )
    watch = BrokerWatch(settings)
    settle_heap()
    engine = engine_for(settings.database_url)
    processes = ProcessWatch(settings)
    run(settings, engine, enqueue_fanout, enqueue_chunk, stop, watch, processes, restore_unacked)


if __name__ == "__main__":
    main()
