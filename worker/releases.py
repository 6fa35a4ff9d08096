"""Local-time runs: each device gets the run when its own zone reaches the run's time.

When the run starts, its fan-out groups the audience by time zone in one SQL statement
(`GROUP BY time_zone`, never a registration in Python), works out each zone's release
instant (schemas/localtime.py) and writes one MessageRelease per instant: zones sharing
an offset share a row, so a run has a few dozen at most. The scheduler's tick releases a
row when its instant comes (`release_due`); one fan-out task takes it and writes and
enqueues that group's Deliveries, walking the audience zone by zone in keyset pages on
(app_id, time_zone, id). The Message stays `accepted` until its last group is released,
then goes `dispatched` as any other.

Each device gets the run once: the unique (message_id, registration_id) of Delivery makes
a second write a no-op, whichever group or retry tries it. The zones are read when the run
starts: a device that registers later in a zone of the run is included when its group is
released; one in a zone the run did not have, or one that moved into an already released
zone, is not.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable
from datetime import datetime

import structlog
from sqlalchemy import Engine, and_, func, or_, select, update
from sqlmodel import Session, col

from schemas.audience import audience, page_audience
from schemas.codes import MessageState
from schemas.db import session_scope
from schemas.localtime import ReleaseGroup, release_groups
from schemas.settings import Settings
from schemas.tables import App, Message, MessageRelease, Registration
from schemas.targets import AnyTarget
from worker import store

log = structlog.get_logger("pushline.releases")

ChunkEnqueuer = Callable[[str, list[str], str], None]
WAITING, RELEASED, FANNING, DONE = "waiting", "released", "fanning", "done"
SKIPPED, CANCELLED = "skipped", "cancelled"
ALL_SKIPPED = "every device's local time had passed when the run started (missed: skip)"


def plan_run(
    engine: Engine, message: Message, target: AnyTarget, now: datetime
) -> tuple[int, bool]:
    """Write the run's release groups once (a repeated fan-out finds them written); returns
    the devices the audience had (0: nothing matched) and whether this call planned it."""
    with Session(engine) as s:
        planned = s.execute(
            select(func.coalesce(func.sum(col(MessageRelease.devices)), -1)).where(
                col(MessageRelease.message_id) == message.id
            )
        ).scalar_one()
        if planned >= 0:
            return int(planned), False
        counts = [
            (zone, int(n))
            for zone, n in s.execute(
                select(col(Registration.time_zone), func.count())
                .where(audience(message.app_id, target))
                .group_by(col(Registration.time_zone))
            ).all()
        ]
        default = s.execute(select(col(App.timezone)).where(col(App.id) == message.app_id))
        app_zone = default.scalar()
    if not counts:
        return 0, True
    assert message.local_time is not None
    started = message.run_at or message.created_at
    groups = release_groups(counts, app_zone, message.local_time, started)
    _write_groups(engine, message.id, groups, now)
    log.info(
        "local-time run planned",
        message=message.id,
        groups=len(groups),
        devices=sum(g.devices for g in groups),
        first=groups[0].release_at.isoformat() if groups[0].release_at else None,
    )
    return sum(g.devices for g in groups), True


def _write_groups(
    engine: Engine, message_id: str, groups: list[ReleaseGroup], now: datetime
) -> None:
    with session_scope(engine) as s:
        if s.get_bind().dialect.name == "postgresql":
            # Two fan-outs of one run planning at once: the second waits, then sees the plan.
            s.execute(
                select(col(Message.id)).where(col(Message.id) == message_id).with_for_update()
            )
        exists = s.execute(
            select(func.count()).where(col(MessageRelease.message_id) == message_id)
        ).scalar_one()
        if exists:
            return
        s.add_all(
            MessageRelease(
                message_id=message_id,
                release_at=g.release_at,
                zones=g.zones,
                devices=g.devices,
                state=SKIPPED if g.release_at is None else WAITING,
                released_at=now if g.release_at is None else None,
            )
            for g in groups
        )


def take_due(engine: Engine, message_id: str, now: datetime) -> list[MessageRelease]:
    """Take the run's groups to fan out now (released by the scheduler, or due meanwhile):
    each is taken by one fan-out task, which marks it done when its Deliveries are out."""
    r = MessageRelease
    due = or_(
        col(r.state) == RELEASED,
        and_(col(r.state) == WAITING, col(r.release_at) <= now),
    )
    with session_scope(engine) as s:
        taken = s.execute(
            update(r)
            .where(col(r.message_id) == message_id, due)
            .values(state=FANNING, released_at=func.coalesce(col(r.released_at), now))
            .returning(col(r.id), col(r.release_at), col(r.zones))
            .execution_options(synchronize_session=False)
        ).all()
    return [
        MessageRelease(id=i, message_id=message_id, release_at=at, zones=zones, state=FANNING)
        for i, at, zones in sorted(taken, key=lambda t: t[1])
    ]


def fan_out_group(
    engine: Engine,
    settings: Settings,
    message: Message,
    target: AnyTarget,
    group: MessageRelease,
    enqueue_chunk: ChunkEnqueuer,
) -> int | None:
    """Write and enqueue the Deliveries of one group, zone by zone in keyset pages; None
    when the Message was cancelled meanwhile."""
    enqueued = 0
    for zone in group.zones:
        in_zone = (
            col(Registration.time_zone).is_(None)
            if zone is None
            else col(Registration.time_zone) == zone
        )
        cursor: str | None = None
        while True:
            condition = and_(page_audience(message.app_id, target, cursor), in_zone)
            page = store.audience_page(engine, condition, cursor, settings.fanout_page_size)
            if not page:
                break
            cursor = page[-1][0]
            queued = store.insert_deliveries(engine, message, page, cursor)
            if queued is None:
                return None
            by_provider: dict[str, list[str]] = defaultdict(list)
            for delivery_id, provider in queued:
                by_provider[provider].append(delivery_id)
            for provider, ids in by_provider.items():
                for lo in range(0, len(ids), settings.chunk_size):
                    enqueue_chunk(provider, ids[lo : lo + settings.chunk_size], message.lane)
                    enqueued += len(ids[lo : lo + settings.chunk_size])
            if len(page) < settings.fanout_page_size:
                break
    with session_scope(engine) as s:
        s.execute(
            update(MessageRelease)
            .where(col(MessageRelease.id) == group.id, col(MessageRelease.state) == FANNING)
            .values(state=DONE)
        )
    return enqueued


def groups_left(engine: Engine, message_id: str) -> int:
    """Groups of the run not fanned out yet (waiting, released or being fanned out)."""
    with Session(engine) as s:
        return int(
            s.execute(
                select(func.count()).where(
                    col(MessageRelease.message_id) == message_id,
                    col(MessageRelease.state).in_([WAITING, RELEASED, FANNING]),
                )
            ).scalar_one()
        )


def release_due(
    engine: Engine, now: datetime, enqueue_fanout: Callable[[str, str], None]
) -> list[str]:
    """The scheduler's part: mark every due group released and enqueue its run's fan-out
    (once per Message); groups of runs cancelled meanwhile are closed instead."""
    r, m = MessageRelease, Message
    due = and_(col(r.state) == WAITING, col(r.release_at) <= now)
    live = select(col(m.id)).where(col(m.state) == MessageState.ACCEPTED)
    with session_scope(engine) as s:
        s.execute(
            update(r)
            .where(due, col(r.message_id).not_in(live))
            .values(state=CANCELLED)
            .execution_options(synchronize_session=False)
        )
        released = s.execute(
            update(r)
            .where(due, col(r.message_id).in_(live))
            .values(state=RELEASED, released_at=now)
            .returning(col(r.message_id))
            .execution_options(synchronize_session=False)
        ).scalars()
        ids = sorted(set(released))
        lanes = (
            dict(s.execute(select(col(m.id), col(m.lane)).where(col(m.id).in_(ids))).tuples().all())
            if ids
            else {}
        )
    for message_id in ids:
        try:
            enqueue_fanout(message_id, lanes.get(message_id, "bulk"))
        except Exception as exc:  # the sweep enqueues released groups whose fan-out is lost
            log.warning(
                "release not enqueued; the sweep will retry", message=message_id, error=str(exc)
            )
    if ids:
        log.info("local-time groups released", messages=len(ids))
    return ids


def stalled_releases(engine: Engine, cutoff: datetime, now: datetime) -> list[tuple[str, str]]:
    """(message id, lane) of runs with a group released before `cutoff` and not fanned out
    since (its fan-out task, or the worker running it, was lost), handed back to be
    taken again."""
    r, m = MessageRelease, Message
    with session_scope(engine) as s:
        ids = s.execute(
            update(r)
            .where(col(r.state).in_([RELEASED, FANNING]), col(r.released_at) < cutoff)
            .values(state=RELEASED, released_at=now)
            .returning(col(r.message_id))
            .execution_options(synchronize_session=False)
        ).scalars()
        wanted = sorted(set(ids))
        if not wanted:
            return []
        rows = s.execute(
            select(col(m.id), col(m.lane)).where(
                col(m.id).in_(wanted), col(m.state) == MessageState.ACCEPTED
            )
        ).tuples()
        return list(rows)
