"""Finding and following campaigns: Messages listed by state, label and time, newest first
in keyset pages, and a Message's outcomes per minute."""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import (
    Boolean,
    ColumnElement,
    DateTime,
    Engine,
    String,
    and_,
    case,
    func,
    literal,
    or_,
    select,
)
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.sql.compiler import SQLCompiler
from sqlalchemy.sql.functions import FunctionElement
from sqlmodel import Session, col

from producer.errors import InvalidRequest
from producer.status import message_status
from schemas.api import MessagePage, MessageSummary, MessageTimeline, TimelineMinute
from schemas.campaigns import decode_cursor, encode_cursor
from schemas.codes import ENGAGEMENT_ORDER, DeliveryStatus, MessageState
from schemas.tables import Delivery, Message

#: A timeline longer than this many minutes is cut to its last ones (a week).
MAX_TIMELINE_MINUTES = 7 * 24 * 60


class _has_label(FunctionElement[bool]):
    """message.labels (a JSON list) holds the label; each database spells its own."""

    type = Boolean()
    name = "has_label"
    inherit_cache = True


@compiles(_has_label, "postgresql")
def _has_label_pg(element: _has_label, compiler: SQLCompiler, **kw: Any) -> str:
    column, wanted, _label = list(element.clauses)
    return (
        f"(CAST({compiler.process(column, **kw)} AS jsonb) @> "
        f"CAST({compiler.process(wanted, **kw)} AS jsonb))"
    )


@compiles(_has_label, "sqlite")
def _has_label_sqlite(element: _has_label, compiler: SQLCompiler, **kw: Any) -> str:
    column, _wanted, label = list(element.clauses)
    return (
        f"EXISTS (SELECT 1 FROM json_each({compiler.process(column, **kw)}) "
        f"WHERE json_each.value = {compiler.process(label, **kw)})"
    )


def has_label(label: str) -> ColumnElement[bool]:
    wanted = literal(json.dumps([label]), String())
    return _has_label(col(Message.labels), wanted, literal(label, String()))


class truncate_minute(FunctionElement[Any]):
    """A time truncated to its minute (text on SQLite, a timestamp on PostgreSQL)."""

    type = DateTime(timezone=True)
    name = "minute"
    inherit_cache = True


@compiles(truncate_minute, "postgresql")
def _minute_pg(element: truncate_minute, compiler: SQLCompiler, **kw: Any) -> str:
    return f"date_trunc('minute', {compiler.process(element.clauses, **kw)})"


@compiles(truncate_minute, "sqlite")
def _minute_sqlite(element: truncate_minute, compiler: SQLCompiler, **kw: Any) -> str:
    return f"strftime('%Y-%m-%d %H:%M:00', {compiler.process(element.clauses, **kw)})"


MESSAGE_STATES = tuple(s.value for s in MessageState)


def list_messages(
    engine: Engine,
    app_id: str | None,
    *,
    state: str | None = None,
    label: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    cursor: str | None = None,
    limit: int = 50,
) -> MessagePage:
    """An app's Messages (every app's for `app_id` None: the operator's CLI), newest first.

    `since` is inclusive and `until` exclusive, on when the Message was accepted.
    """
    q = select(Message)
    if app_id is not None:
        q = q.where(col(Message.app_id) == app_id)
    if state is not None:
        if state not in MESSAGE_STATES:
            rule = f"must be one of {', '.join(MESSAGE_STATES)}"
            raise InvalidRequest(f"state: {rule}", [{"field": "state", "rule": rule}])
        q = q.where(col(Message.state) == state)
    if label is not None:
        q = q.where(has_label(label))
    if since is not None:
        q = q.where(col(Message.created_at) >= _utc(since))
    if until is not None:
        q = q.where(col(Message.created_at) < _utc(until))
    if cursor:
        q = q.where(_before(cursor))
    q = q.order_by(col(Message.created_at).desc(), col(Message.id).desc()).limit(limit + 1)
    with Session(engine) as s:
        rows = list(s.execute(q).scalars())
    more = len(rows) > limit
    rows = rows[:limit]
    nxt = encode_cursor(rows[-1].created_at, rows[-1].id) if more else None
    return MessagePage(items=[_summary(m) for m in rows], next_cursor=nxt)


def _utc(t: datetime) -> datetime:
    return t if t.tzinfo else t.replace(tzinfo=UTC)


def _before(cursor: str) -> ColumnElement[bool]:
    try:
        created_at, message_id = decode_cursor(cursor)
    except ValueError as exc:
        raise InvalidRequest(f"cursor: {exc}", [{"field": "cursor", "rule": str(exc)}]) from exc
    return or_(
        col(Message.created_at) < created_at,
        and_(col(Message.created_at) == created_at, col(Message.id) < message_id),
    )


def _summary(m: Message) -> MessageSummary:
    return MessageSummary(
        id=m.id,
        name=m.name,
        labels=m.labels or [],
        state=m.state,
        code=m.code,
        total=m.total,
        lane=m.lane,
        target_type=str(m.target.get("type")),
        schedule_id=m.schedule_id,
        created_at=m.created_at,
        dispatched_at=m.dispatched_at,
        completed_at=m.completed_at,
    )


_SENT = tuple(s.value for s in ENGAGEMENT_ORDER)  # sent, and engaged with afterwards


def timeline(engine: Engine, app_id: str | None, message_id: str) -> MessageTimeline:
    """Sent (by `sent_at`), failed and cancelled (by when recorded) per minute, in one
    grouped query over the Message's Deliveries."""
    message_status(engine, app_id, message_id)  # 404 for unknown or another app's message
    d = Delivery
    sent = col(d.status).in_(_SENT)
    when = case((sent, col(d.sent_at)), else_=col(d.updated_at))
    minute = truncate_minute(when)
    q = (
        select(
            minute,
            func.sum(case((sent, 1), else_=0)),
            func.sum(case((col(d.status) == DeliveryStatus.ERROR, 1), else_=0)),
            func.sum(case((col(d.status) == DeliveryStatus.CANCELLED, 1), else_=0)),
        )
        .where(col(d.message_id) == message_id, col(d.status) != DeliveryStatus.QUEUED)
        .group_by(minute)
    )
    with Session(engine) as s:
        rows = s.execute(q).all()
    counts = {as_minute(m): (int(a), int(b), int(c)) for m, a, b, c in rows if m is not None}
    return MessageTimeline(message_id=message_id, minutes=fill_minutes(counts))


def as_minute(value: Any) -> datetime:
    t = datetime.fromisoformat(value) if isinstance(value, str) else value
    return _utc(t)


def fill_minutes(counts: dict[datetime, tuple[int, int, int]]) -> list[TimelineMinute]:
    """Every minute from the first to the last with outcomes, zeros where none (at most
    MAX_TIMELINE_MINUTES, the latest), so a chart's x axis is even."""
    if not counts:
        return []
    last = max(counts)
    first = max(min(counts), last - timedelta(minutes=MAX_TIMELINE_MINUTES - 1))
    out: list[TimelineMinute] = []
    t = first
    while t <= last:
        sent, failed, cancelled = counts.get(t, (0, 0, 0))
        out.append(TimelineMinute(minute=t, sent=sent, failed=failed, cancelled=cancelled))
        t += timedelta(minutes=1)
    return out
