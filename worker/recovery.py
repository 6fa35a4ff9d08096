"""The recovery sweep: the SQL store is the truth, Redis only dispatches work.

When Redis loses its contents (FLUSHALL, a restart without persistence, a failover) the
tasks are gone but the rows are not. The sweep, run by the scheduler process, finds

- Messages accepted but not fanned out, with no sign of a fan-out at work, and
- dispatched Messages with QUEUED Deliveries that made no progress for a grace period
  (no Delivery of the Message touched, none leased, none waiting for a retry),

and enqueues their work again. A Delivery enqueued twice costs one claim query, never a
second send (deliver_chunk claims rows with a lease); a Delivery re-enqueued is touched so
the next sweep gives it another grace period.

Work is never re-enqueued into a queue that no live worker consumes (heartbeats, see
schemas/liveness.py): it would only pile up there. The sweep logs one ERROR per interval
naming the queue and the worker to start instead. When the scheduler sees the broker lose
its contents (the broker epoch changed) it sweeps at once with no grace (`grace_s=0`).

When a process holding leases stops beating (killed, or hung), `release_leases` frees its
QUEUED rows and enqueues them again at once (schemas/liveness.py says how a silence is
judged).
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

import structlog
from sqlalchemy import ColumnElement, Engine, and_, exists, false, or_, select, true, update
from sqlmodel import Session, col

from schemas.codes import MessageState
from schemas.db import session_scope
from schemas.liveness import BEAT_EVERY_S, HOW_TO_CONSUME
from schemas.metrics import RECOVERED
from schemas.queueing import queue_for
from schemas.settings import Settings
from schemas.tables import QUEUED, Delivery, Message, MessageRelease, table
from worker.fanout import chunks
from worker.releases import stalled_releases

log = structlog.get_logger("pushline.recovery")

PAGE = 5000


@dataclass
class SweepReport:
    fanouts: int = 0
    deliveries: int = 0
    unconsumed: set[str] = field(default_factory=set)  # queues skipped: nobody reads them


def sweep(
    engine: Engine,
    settings: Settings,
    now: datetime,
    enqueue_fanout: Callable[[str, str], None],
    enqueue_chunk: Callable[[str, list[str], str], None],
    *,
    consumed: set[str] | None = None,
    lost_at: datetime | None = None,
) -> SweepReport:
    """`consumed`: the queues live workers read (None: unknown, enqueue anyway).

    `lost_at`: when the broker was seen to have lost its contents. Every task enqueued
    before then is gone, so everything still QUEUED and untouched since is enqueued again
    at once, progress or not, whether its Message is fanned out or still fanning out (a
    fan-out that outlived the loss enqueues the rest itself).
    """
    report = SweepReport()
    cutoff = lost_at or now - timedelta(seconds=settings.sweep_grace_s)

    def readable(lane: str) -> bool:
        queue = queue_for(lane, settings.priority_lane)
        if consumed is None or queue in consumed:
            return True
        report.unconsumed.add(queue)
        return False

    with Session(engine) as s:
        # After a loss the tasks are gone whatever the progress before it.
        recent_work: ColumnElement[bool] = (
            false()
            if lost_at is not None
            else exists().where(
                col(Delivery.message_id) == col(Message.id), col(Delivery.updated_at) > cutoff
            )
        )
        states = (
            [MessageState.DISPATCHED]
            if lost_at is None
            else [MessageState.ACCEPTED, MessageState.DISPATCHED]
        )
        # A local-time run waits for its zones on purpose; its released groups whose
        # fan-out was lost are found by stalled_releases.
        planned = exists().where(col(MessageRelease.message_id) == col(Message.id))
        stalled_fanouts = s.execute(
            select(col(Message.id), col(Message.lane)).where(
                col(Message.state) == MessageState.ACCEPTED,
                col(Message.created_at) < cutoff,
                ~recent_work,
                ~planned,
            )
        ).all()
        stalled = s.execute(
            select(col(Message.id), col(Message.lane)).where(
                or_(
                    col(Message.state).in_(states),
                    and_(col(Message.state) == MessageState.ACCEPTED, planned),
                ),
                exists().where(
                    col(Delivery.message_id) == col(Message.id),
                    col(Delivery.status) == QUEUED,
                ),
                ~recent_work,
            )
        ).all()
    for message_id, lane in [*stalled_fanouts, *stalled_releases(engine, cutoff, now)]:
        if readable(lane):
            enqueue_fanout(message_id, lane)
            report.fanouts += 1
    for message_id, lane in stalled:
        if readable(lane):
            report.deliveries += _requeue(
                engine, message_id, lane, now, cutoff, settings, enqueue_chunk, lost_at
            )
    _tell(report)
    return report


def _tell(report: SweepReport) -> None:
    for queue in sorted(report.unconsumed):
        log.error(
            "work waits in a queue no live worker consumes",
            queue=queue,
            start=HOW_TO_CONSUME.get(queue, f"pushline worker -Q {queue}"),
        )
    if report.fanouts or report.deliveries:
        RECOVERED.labels("fanout").inc(report.fanouts)
        RECOVERED.labels("delivery").inc(report.deliveries)
        log.warning(
            "recovered work the broker lost", fanouts=report.fanouts, deliveries=report.deliveries
        )


def _requeue(
    engine: Engine,
    message_id: str,
    lane: str,
    now: datetime,
    cutoff: datetime,
    settings: Settings,
    enqueue_chunk: Callable[[str, list[str], str], None],
    lost_at: datetime | None = None,
) -> int:
    idle = and_(
        col(Delivery.message_id) == message_id,
        col(Delivery.status) == QUEUED,
        or_(col(Delivery.lease_until).is_(None), col(Delivery.lease_until) < now),
        or_(col(Delivery.next_attempt_at).is_(None), col(Delivery.next_attempt_at) < cutoff),
        true() if lost_at is None else col(Delivery.updated_at) < lost_at,
    )
    total, after = 0, ""
    while True:
        with session_scope(engine) as s:
            page = (
                select(col(Delivery.id))
                .where(idle, col(Delivery.id) > after)
                .order_by(col(Delivery.id))
                .limit(PAGE)
            )
            if s.get_bind().dialect.name == "postgresql":
                # Rows a worker is claiming or recording are locked, and are no lost work:
                # skip them rather than wait on them (or deadlock with the worker).
                page = page.with_for_update(skip_locked=True)
            returned = s.execute(
                update(Delivery)
                .where(col(Delivery.id).in_(page.scalar_subquery()))
                .values(updated_at=now)
                .returning(col(Delivery.id), col(Delivery.provider))
                .execution_options(synchronize_session=False)
            ).all()
            if not returned:
                return total
            rows = sorted((str(r[0]), str(r[1])) for r in returned)
            ids = [r[0] for r in rows]
        _enqueue_again([(i, p, lane) for i, p in rows], settings, enqueue_chunk)
        total += len(ids)
        after = ids[-1]


def release_leases(
    engine: Engine,
    settings: Settings,
    holders: dict[str, float],
    now: datetime,
    enqueue_chunk: Callable[[str, list[str], str], None],
) -> int:
    """Free the leases `holders` (processes gone silent, with their last beats, Unix time)
    hold on QUEUED rows and enqueue those rows again; returns how many. A row sent whose
    outcome its holder never recorded is sent again: at most what was in flight.

    Only leases a holder could have taken before it fell silent are freed: should a new
    process on the host get the same pid (so the same name) meanwhile, its leases stay."""
    if not holders:
        return 0
    d, m = table(Delivery).c, table(Message).c
    latest = 2 * BEAT_EVERY_S + settings.lease_s  # a lease taken up to a late next beat
    taken_while_beating = or_(
        *(
            and_(d.leased_by == name, d.lease_until <= datetime.fromtimestamp(at + latest, UTC))
            for name, at in sorted(holders.items())
        )
    )
    with session_scope(engine) as s:
        rows = s.execute(
            update(table(Delivery))
            .where(taken_while_beating, d.status == QUEUED, d.lease_until >= now)
            .values(lease_until=None, updated_at=now)
            .returning(d.id, d.provider, d.message_id)
        ).all()
        lanes = (
            dict(s.execute(select(m.id, m.lane).where(m.id.in_({str(r[2]) for r in rows}))).all())
            if rows
            else {}
        )
    _enqueue_again([(i, p, lanes.get(mid, "bulk")) for i, p, mid in rows], settings, enqueue_chunk)
    if rows:  # a holder that died between tasks held nothing
        RECOVERED.labels("delivery").inc(len(rows))
        log.warning(
            "released the leases of a worker process that stopped",
            holders=sorted(holders),
            deliveries=len(rows),
        )
    return len(rows)


def _enqueue_again(
    rows: list[tuple[str, str, str]],
    settings: Settings,
    enqueue_chunk: Callable[[str, list[str], str], None],
) -> None:
    """Deliver tasks for (Delivery id, provider, lane) rows: one chunk of ids at a time per
    provider and lane, in id order."""
    groups: dict[tuple[str, str], list[str]] = defaultdict(list)
    for delivery_id, provider, lane in sorted(rows):
        groups[(provider, lane)].append(delivery_id)
    for (provider, lane), ids in groups.items():
        for chunk in chunks(ids, settings.chunk_size):
            enqueue_chunk(provider, chunk, lane)
