"""Reading and steering Schedules: list, read, pause, resume, cancel."""

from __future__ import annotations

from sqlalchemy import Engine, select
from sqlmodel import Session, col

from producer.errors import Conflict, NotFound
from schemas.api import ScheduleOut, SchedulePage
from schemas.db import session_scope
from schemas.scheduling import next_run
from schemas.tables import Message, Schedule, utcnow

MESSAGES_SHOWN = 100


def _out(s: Session, sch: Schedule) -> ScheduleOut:
    ids = list(
        s.execute(
            select(col(Message.id))
            .where(col(Message.schedule_id) == sch.id)
            .order_by(col(Message.run_at).desc())
            .limit(MESSAGES_SHOWN)
        ).scalars()
    )
    return ScheduleOut(
        id=sch.id,
        app_id=sch.app_id,
        state=sch.state,
        kind=sch.kind,
        target=sch.target,
        payload=sch.payload,
        publish_at=sch.publish_at,
        repeat_every=sch.repeat_every_s,
        repeat_expires_at=sch.repeat_expires_at,
        cron=sch.cron,
        timezone=sch.timezone,
        local_time=(sch.local_time or {}).get("at"),
        local_date=(sch.local_time or {}).get("date"),
        local_time_missed=(sch.local_time or {}).get("missed"),
        next_run_at=sch.next_run_at,
        runs=sch.runs,
        last_run_at=sch.last_run_at,
        created_at=sch.created_at,
        message_ids=ids,
    )


def _get(s: Session, app_id: str | None, schedule_id: str) -> Schedule:
    sch = s.get(Schedule, schedule_id)
    if sch is None or (app_id is not None and sch.app_id != app_id):
        raise NotFound(f"schedule {schedule_id} not found")
    return sch


def get_schedule(engine: Engine, app_id: str | None, schedule_id: str) -> ScheduleOut:
    with Session(engine) as s:
        return _out(s, _get(s, app_id, schedule_id))


def list_schedules(
    engine: Engine, app_id: str | None, *, state: str | None, cursor: str | None, limit: int
) -> SchedulePage:
    q = select(Schedule)
    if app_id is not None:
        q = q.where(col(Schedule.app_id) == app_id)
    if state:
        q = q.where(col(Schedule.state) == state)
    if cursor:
        q = q.where(col(Schedule.id) > cursor)
    q = q.order_by(col(Schedule.id)).limit(limit + 1)
    with Session(engine) as s:
        rows = list(s.execute(q).scalars())
        items = [_out(s, r) for r in rows[:limit]]
    return SchedulePage(items=items, next_cursor=rows[limit - 1].id if len(rows) > limit else None)


def upcoming_schedules(engine: Engine, app_id: str | None, limit: int) -> list[ScheduleOut]:
    """Schedules still to run (scheduled or paused), the next run first (the console)."""
    q = select(Schedule).where(col(Schedule.state).in_(["scheduled", "paused"]))
    if app_id is not None:
        q = q.where(col(Schedule.app_id) == app_id)
    q = q.order_by(col(Schedule.next_run_at), col(Schedule.id)).limit(limit)
    with Session(engine) as s:
        return [_out(s, r) for r in s.execute(q).scalars()]


def set_state(engine: Engine, app_id: str | None, schedule_id: str, action: str) -> ScheduleOut:
    """pause | resume | cancel. Resuming skips the runs that fell due while paused."""
    now = utcnow()
    with session_scope(engine) as s:
        sch = _get(s, app_id, schedule_id)
        allowed = {"pause": {"scheduled"}, "resume": {"paused"}, "cancel": {"scheduled", "paused"}}
        if sch.state not in allowed[action]:
            raise Conflict(f"a {sch.state} schedule cannot be {action}d")
        if action == "pause":
            sch.state = "paused"
        elif action == "cancel":
            sch.state, sch.next_run_at = "cancelled", None
        else:
            sch.state = "scheduled"
            if sch.next_run_at is not None and sch.next_run_at < now:
                sch.next_run_at = (
                    next_run(
                        sch.kind,
                        sch.next_run_at,
                        now,
                        repeat_every_s=sch.repeat_every_s,
                        repeat_expires_at=sch.repeat_expires_at,
                        cron=sch.cron,
                        timezone=sch.timezone,
                    )
                    if sch.kind != "once"
                    else now
                )
                if sch.next_run_at is None:
                    sch.state = "finished"
        sch.updated_at = now
        s.add(sch)
        s.flush()
        return _out(s, sch)
