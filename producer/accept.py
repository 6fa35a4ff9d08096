"""Accepting a push: validate, normalise, persist the Message, enqueue its fan-out.

The REST API and Python services call the same function, so a push means the same thing
whichever way it arrives.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import timedelta
from typing import Any

from pydantic import ValidationError
from sqlalchemy import Engine, delete
from sqlalchemy.exc import OperationalError

from producer.enqueue import enqueue_fanout
from producer.errors import InvalidRequest, Unavailable
from schemas.api import PushRequest
from schemas.codes import MessageState
from schemas.db import engine_for, session_scope
from schemas.settings import Settings, get_settings
from schemas.tables import Message, utcnow


@dataclass(frozen=True)
class Accepted:
    message_id: str
    state: str


def validation_details(exc: ValidationError) -> list[dict[str, str]]:
    return [
        {"field": ".".join(str(p) for p in err["loc"]) or "body", "rule": err["msg"]}
        for err in exc.errors()
    ]


def parse_push(body: dict[str, Any] | PushRequest) -> PushRequest:
    if isinstance(body, PushRequest):
        return body
    try:
        return PushRequest.model_validate(body)
    except ValidationError as exc:
        details = validation_details(exc)
        first = details[0]
        raise InvalidRequest(f"{first['field']}: {first['rule']}", details) from exc


def accept_push(
    app_id: str,
    body: dict[str, Any] | PushRequest,
    *,
    settings: Settings | None = None,
    engine: Engine | None = None,
) -> Accepted:
    """Persist a Message and enqueue its fan-out; raise InvalidRequest or Unavailable.

    The Message is committed before the task is published (so a fast worker always finds
    it) and removed again when the broker refuses the task: nothing is half-accepted.
    """
    settings = settings or get_settings()
    engine = engine or engine_for(settings.database_url)
    request = parse_push(body)
    payload = request.payload.model_dump(exclude_none=True)
    now = utcnow()
    ttl = request.payload.time_to_live
    message = Message(
        app_id=app_id,
        target=request.target.model_dump(),
        payload=payload,
        state=MessageState.ACCEPTED,
        created_at=now,
        expires_at=now + timedelta(seconds=ttl) if ttl else None,
    )
    try:
        with session_scope(engine) as s:
            s.add(message)
    except OperationalError as exc:
        raise Unavailable(f"the store is unavailable; nothing was accepted ({exc.orig})") from exc
    try:
        enqueue_fanout(settings, message.id)
    except Exception as exc:  # kombu raises several types for a broker that is down
        with session_scope(engine) as s:
            s.execute(delete(Message).where(Message.id == message.id))  # type: ignore[arg-type]
        raise Unavailable(
            f"the queue is unavailable (result code 3); nothing was accepted ({exc})"
        ) from exc
    return Accepted(message_id=message.id, state=message.state)
