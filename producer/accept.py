"""Accepting a push: validate, normalise, persist the Message (or Schedule), enqueue fan-out.

The REST API and Python services call the same function, so a push means the same thing
whichever way it arrives.
"""

from __future__ import annotations

import hashlib
import json
from concurrent.futures import Future
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NamedTuple

import structlog
from pydantic import ValidationError
from sqlalchemy import Engine, delete, select, update
from sqlalchemy.exc import IntegrityError, OperationalError
from sqlmodel import Session, col

from producer.dispatch import announce_accepted, dispatcher_for, log_accepted, on_loop
from producer.enqueue import enqueue_fanout
from producer.errors import Conflict, InvalidRequest, Unavailable
from schemas.api import THROTTLE_FIELDS, PushRequest
from schemas.campaigns import campaign_columns
from schemas.codes import MessageState
from schemas.db import engine_for, session_scope
from schemas.inbox import app_topics, unknown_topic_rule
from schemas.payload import Payload, PayloadError, check_push, stored
from schemas.queueing import lane_for
from schemas.scheduling import ScheduleError, plan
from schemas.settings import Settings, get_settings
from schemas.tables import Message, Schedule, new_id, table, utcnow
from schemas.targets import is_transactional

IDEMPOTENCY_WINDOW = timedelta(hours=24)
# Longer than kombu's bounded publish retry (queueing.celery_config): past it, answer 503.
PUBLISH_TIMEOUT_S = 10.0


@dataclass(frozen=True)
class Accepted:
    message_id: str  # the Schedule's id when `state` is "scheduled"
    state: str
    next_run_at: datetime | None = None
    replayed: bool = False

    @property
    def status_url(self) -> str:
        kind = "schedules" if self.state == "scheduled" else "messages"
        return f"/v1/{kind}/{self.message_id}"


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "body", "rule": err["msg"]}
        for err in exc.errors()
    ]


class Checked(NamedTuple):
    request: PushRequest
    target: dict[str, Any]  # as stored
    payload: dict[str, Any]  # as stored


def parse_push(body: dict[str, Any] | PushRequest) -> PushRequest:
    return parse_checked(body).request


def parse_checked(body: dict[str, Any] | PushRequest) -> Checked:
    """The request, validated, with its target and payload as stored (what the checks
    return is kept, so a row need not dump both models again)."""
    if isinstance(body, PushRequest):
        request = body
    else:
        try:
            request = PushRequest.model_validate(body)
        except ValidationError as exc:
            details = validation_details(exc)
            first = details[0]
            raise InvalidRequest(f"{first['field']}: {first['rule']}", details) from exc
    # The rules that span payload and target: a 400 here, not later. Each model is dumped
    # once: on the single-device path the dumps were a tenth of the request's own CPU.
    payload = stored(request.payload)
    target = stored_target(request, payload)
    _throttle_is_for_campaigns(request, target)
    return Checked(request, target, payload)


def _throttle_is_for_campaigns(request: PushRequest, target: dict[str, Any]) -> None:
    """A throttle spreads a campaign; one device or one person has nothing to spread."""
    for name in THROTTLE_FIELDS:
        if getattr(request, name) is not None and is_transactional(target):
            rule = "applies to campaigns, not to a push to one device or one person"
            raise InvalidRequest(f"{name}: {rule}", [{"field": name, "rule": rule}])
    if request.quiet_hours is not None and lane_for(target, request.payload.priority) == "priority":
        rule = "holds campaign-lane pushes; one device or one person at high priority never waits"
        raise InvalidRequest(f"quiet_hours: {rule}", [{"field": "quiet_hours", "rule": rule}])


def stored_target(request: PushRequest, payload: dict[str, Any] | None = None) -> dict[str, Any]:
    """The target as stored: bulk entries carry their payloads validated and normalised.
    `payload`: the request's payload as stored, when the caller has it already."""
    try:
        return check_push(request.payload, request.target.model_dump(), payload)
    except PayloadError as exc:
        raise InvalidRequest(str(exc), [{"field": exc.field, "rule": exc.rule}]) from exc


def check_inbox_topic(engine: Engine, app_id: str, topic: str) -> None:
    """A push may name only an inbox topic its app has, written exactly so (Infobip
    rejects the send otherwise)."""
    with engine.connect() as conn:
        rule = unknown_topic_rule(app_topics(conn, app_id), topic)
    if rule is not None:
        raise InvalidRequest(
            f"payload.inbox_topic: {rule}", [{"field": "payload.inbox_topic", "rule": rule}]
        )


def expires_at(payload: Payload, now: datetime) -> datetime | None:
    """When the Message's life ends: time_to_live from now, or the absolute expiration."""
    if payload.expiration is not None:
        return payload.expiration
    return now + timedelta(seconds=payload.time_to_live) if payload.time_to_live else None


def request_hash(request: PushRequest) -> str:
    canonical = request.model_dump(mode="json", exclude={"idempotency_key"}, exclude_none=True)
    return hashlib.sha256(json.dumps(canonical, sort_keys=True).encode()).hexdigest()


def accept_push(
    app_id: str,
    body: dict[str, Any] | PushRequest,
    *,
    settings: Settings | None = None,
    engine: Engine | None = None,
    idempotency_key: str | None = None,
) -> Accepted:
    """Persist a Message and enqueue its fan-out (or, for one device or one person, its
    Deliveries), or persist a Schedule.

    Raises InvalidRequest, Conflict (an idempotency key reused with another body) or
    Unavailable. The Message is committed before the task is published (so a fast worker
    always finds it) and removed again when the broker refuses the task: nothing is
    half-accepted.
    """
    settings = settings or get_settings()
    engine = engine or engine_for(settings.database_url)
    request = parse_push(body)
    key = idempotency_key or request.idempotency_key
    now = utcnow()
    try:
        if request.payload.inbox_topic is not None:
            check_inbox_topic(engine, app_id, request.payload.inbox_topic)
        if request.schedule is not None:
            lane = lane_for(request.target.model_dump(), request.payload.priority)
            return _accept_schedule(engine, settings, app_id, request, lane, now)
        digest = None
        if key is not None:
            digest = request_hash(request)
            replay = _replay(engine, app_id, key, digest, now)
            if replay is not None:
                return replay
        row = message_row(app_id, request, key, digest, now)
        try:
            if inline(settings, row):
                # The accept line is logged here, in the caller's thread, once accepted: a
                # caller's own output after this returns never races it.
                done = dispatcher_for(settings, engine).submit(row, quiet=True)
                accepted = Accepted(row["id"], wait_dispatched(done))
                log_accepted(row, structlog.contextvars.get_contextvars())
                return accepted
            message = Message(**row)
            with session_scope(engine) as s:
                s.add(message)
        except IntegrityError:
            # Another request with the same key won the race: answer as its replay.
            replay = _replay(engine, app_id, key or "", digest or "", now)
            if replay is None:
                raise
            return replay
    except OperationalError as exc:
        raise Unavailable(f"the store is unavailable; nothing was accepted ({exc.orig})") from exc
    try:
        enqueue_fanout(settings, message.id, message.lane)
    except Exception as exc:  # kombu raises several types for a broker that is down
        _withdraw(engine, message.id)
        raise Unavailable(
            f"the queue is unavailable (result code 3); nothing was accepted ({exc})"
        ) from exc
    announce_accepted(row, structlog.contextvars.get_contextvars())
    return Accepted(message_id=message.id, state=message.state)


_MESSAGE_COLUMNS = dict.fromkeys(c.name for c in table(Message).columns)


def message_row(
    app_id: str,
    request: PushRequest,
    key: str | None,
    digest: str | None,
    now: datetime,
    stored_as: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> dict[str, Any]:
    """The accepted Message as a row, every column present (a Message model costs ~0.1 ms
    to build; the single-device path inserts rows)."""
    target, payload = stored_as or (stored_target(request), stored(request.payload))
    return {
        **_MESSAGE_COLUMNS,
        "id": new_id(),
        "app_id": app_id,
        "target": target,
        "payload": payload,
        "state": MessageState.ACCEPTED,
        "total": 0,
        "lane": lane_for(target, request.payload.priority),
        "idempotency_key": key,
        "request_hash": digest,
        "created_at": now,
        "expires_at": expires_at(request.payload, now),
        **campaign_columns(request.campaign()),
    }


def inline(settings: Settings, row: dict[str, Any]) -> bool:
    """One device or one person: resolved when accepted and queued straight to delivery,
    with no fan-out task (producer/dispatch.py)."""
    return settings.inline_max_deliveries > 0 and is_transactional(row["target"])


TOO_SLOW = "the store or the queue did not answer in time; try again"


def wait_dispatched(done: Future[str]) -> str:
    try:
        return done.result(timeout=PUBLISH_TIMEOUT_S)
    except TimeoutError as exc:
        raise Unavailable(TOO_SLOW) from exc


async def wait_dispatched_async(done: Future[str]) -> str:
    try:
        return await on_loop(done, PUBLISH_TIMEOUT_S)
    except TimeoutError as exc:
        raise Unavailable(TOO_SLOW) from exc


class Inline(NamedTuple):
    id: str  # the Message's
    done: Future[str]  # its state once written and queued
    lane: str


def submit_inline(
    app_id: str,
    request: PushRequest,
    *,
    settings: Settings,
    engine: Engine,
    idempotency_key: str | None = None,
    quiet: bool = False,
    stored_as: tuple[dict[str, Any], dict[str, Any]] | None = None,
) -> Inline | None:
    """The API's path for a push to one device or one person with no idempotency key and
    no schedule: no I/O here, so the event loop hands it to the dispatcher directly.
    Returns the Message id and its state to come, or None for `accept_push` to take it.
    `quiet`: the caller logs the accept line itself (with the request's own fields)."""
    if idempotency_key or request.idempotency_key or request.schedule is not None:
        return None
    if request.payload.inbox_topic is not None:
        return None  # the topic is checked in SQL: accept_push does it
    row = message_row(app_id, request, None, None, utcnow(), stored_as)
    if not inline(settings, row):
        return None
    done = dispatcher_for(settings, engine).submit(row, quiet=quiet)
    return Inline(row["id"], done, row["lane"])


def _withdraw(engine: Engine, message_id: str) -> None:
    """Take back a Message that could not be queued."""
    with session_scope(engine) as s:
        s.execute(delete(Message).where(col(Message.id) == message_id))


def _replay(engine: Engine, app_id: str, key: str, digest: str, now: datetime) -> Accepted | None:
    """The first Message for this key within 24 h, or None; 409 when the body differs."""
    with Session(engine) as s:
        first = (
            s.execute(
                select(Message).where(
                    col(Message.app_id) == app_id, col(Message.idempotency_key) == key
                )
            )
            .scalars()
            .first()
        )
    if first is None:
        return None
    if first.created_at < now - IDEMPOTENCY_WINDOW:
        # An old key is free again: release it from the Message that held it.
        with session_scope(engine) as s:
            s.execute(
                update(Message).where(col(Message.id) == first.id).values(idempotency_key=None)
            )
        return None
    if first.request_hash != digest:
        rule = "this Idempotency-Key was used within 24 hours for a different request"
        raise Conflict(rule, [{"field": "idempotency_key", "rule": rule}])
    return Accepted(message_id=first.id, state=first.state, replayed=True)


def _accept_schedule(
    engine: Engine,
    settings: Settings,
    app_id: str,
    request: PushRequest,
    lane: str,
    now: datetime,
) -> Accepted:
    assert request.schedule is not None
    try:
        p = plan(request.schedule, now, repeat_every_min_s=settings.repeat_every_min_s)
    except ScheduleError as exc:
        raise InvalidRequest(
            str(exc), [{"field": exc.field, "rule": exc.rule}], code=exc.code
        ) from exc
    schedule = Schedule(
        app_id=app_id,
        target=stored_target(request),
        payload=stored(request.payload),
        lane=lane,
        kind=p.kind,
        publish_at=p.publish_at,
        repeat_every_s=p.repeat_every_s,
        repeat_expires_at=p.repeat_expires_at,
        cron=p.cron,
        timezone=p.timezone,
        local_time=p.local_time,
        next_run_at=p.first_run_at,
        campaign=request.campaign() or None,
        created_at=now,
        updated_at=now,
    )
    with session_scope(engine) as s:
        s.add(schedule)
    return Accepted(message_id=schedule.id, state="scheduled", next_run_at=p.first_run_at)
