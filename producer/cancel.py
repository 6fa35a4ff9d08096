"""Cancelling a Message in flight: no more fan-out, no more sends, the rest CANCELLED.

Order matters. The Redis flag goes first, so every worker sending the Message's Deliveries
stops within a poll (worker/deliver.py); then one transaction moves the Message to
`cancelled` and its idle QUEUED Deliveries to CANCELLED. A fan-out page committed before
that transaction is seen by its Delivery update; one committed after finds the Message
cancelled when it moves its cursor on the same row, and cancels its own page. Deliveries
already SENT (or failed) keep their outcome.
"""

from __future__ import annotations

import redis
from redis.exceptions import RedisError
from sqlalchemy import Engine, update
from sqlmodel import Session, col

from producer.errors import Conflict, NotFound, Unavailable
from producer.status import message_status
from schemas.api import MessageStatus
from schemas.campaigns import CANCELLED_TEXT, cancel_deliveries
from schemas.codes import MessageState
from schemas.queueing import CANCELLED_FLAG_TTL_S, cancelled_key
from schemas.settings import Settings
from schemas.tables import Message, MessageRelease, utcnow

CANCELLABLE = (MessageState.ACCEPTED, MessageState.DISPATCHED)


def target_type(engine: Engine, app_id: str | None, message_id: str) -> str:
    """The Message's target kind (the role a cancel needs is the one its push needed)."""
    with Session(engine) as s:
        msg = s.get(Message, message_id)
    if msg is None or (app_id is not None and msg.app_id != app_id):
        raise NotFound(f"message {message_id} not found")
    return str(msg.target.get("type"))


def cancel_message(
    engine: Engine, settings: Settings, app_id: str | None, message_id: str
) -> MessageStatus:
    """Cancel a Message still being delivered; a cancelled one answers as it is (409 for a
    Message already done or failed). `app_id` None: the operator's CLI."""
    current = message_status(engine, app_id, message_id)
    if current.state == MessageState.CANCELLED:
        return current
    if current.state not in CANCELLABLE:
        _finished(message_id, current.state)
    _flag(settings, message_id)
    now = utcnow()
    with engine.begin() as conn:
        moved = conn.execute(
            update(Message)
            .where(col(Message.id) == message_id, col(Message.state).in_(CANCELLABLE))
            .values(state=MessageState.CANCELLED, completed_at=now, detail=CANCELLED_TEXT)
        ).rowcount
        if moved:
            conn.execute(cancel_deliveries(message_id, now))
            # A local-time run's groups still to come never will.
            conn.execute(
                update(MessageRelease)
                .where(
                    col(MessageRelease.message_id) == message_id,
                    col(MessageRelease.state).in_(["waiting", "released"]),
                )
                .values(state="cancelled")
            )
    if not moved:  # it finished between the read and the write
        _finished(message_id, message_status(engine, app_id, message_id).state)
    return message_status(engine, app_id, message_id)


def _finished(message_id: str, state: str) -> None:
    rule = f"the message is already {state}: nothing is left to cancel"
    raise Conflict(f"message {message_id}: {rule}", [{"field": "message_id", "rule": rule}])


def _flag(settings: Settings, message_id: str) -> None:
    """Without the flag, workers sending it now would not stop: refuse rather than
    half-cancel."""
    client = redis.Redis.from_url(settings.redis_url, socket_timeout=2, socket_connect_timeout=2)
    try:
        client.set(cancelled_key(settings, message_id), "1", ex=CANCELLED_FLAG_TTL_S)
    except RedisError as exc:
        raise Unavailable(f"Redis is unavailable; nothing was cancelled ({exc})") from exc
    finally:
        client.close()
