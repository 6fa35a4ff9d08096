"""Inbox topics and inboxes (Infobip): create and list an app's topics, list a person's
inbox newest first, mark inbox messages seen. Used by the Infobip surface and the CLI."""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import Engine, func, select, update
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, col

from producer.errors import Conflict, InvalidRequest, NotFound
from schemas.tables import InboxMessage, InboxTopic, Message

INBOX_LIMIT_MAX = 1000


def create_topic(engine: Engine, app_id: str, name: str) -> InboxTopic:
    """A new topic of the app, kept exactly as written; the same name again is a Conflict
    (a name differing only in case is another topic)."""
    if not name or name != name.strip() or len(name) > 255:
        raise InvalidRequest(
            "name: 1 to 255 characters, no leading or trailing space",
            [{"field": "name", "rule": "1 to 255 characters, no leading or trailing space"}],
        )
    topic = InboxTopic(app_id=app_id, name=name)
    try:
        with Session(engine, expire_on_commit=False) as s:
            s.add(topic)
            s.commit()
    except IntegrityError:
        raise Conflict(f"inbox topic {name!r} exists") from None
    return topic


def list_topics(engine: Engine, app_id: str) -> list[InboxTopic]:
    with Session(engine) as s:
        found = s.execute(
            select(InboxTopic)
            .where(col(InboxTopic.app_id) == app_id)
            .order_by(col(InboxTopic.name))
        ).scalars()
        return list(found)


def millis(at: datetime) -> int:
    at = at if at.tzinfo else at.replace(tzinfo=UTC)  # SQLite returns naive UTC
    return int(at.timestamp() * 1000)


def _content(payload: dict[str, Any]) -> tuple[str | None, str | None]:
    """(title, body) of a stored payload's alert."""
    alert = payload.get("alert")
    if isinstance(alert, dict):
        return alert.get("title"), alert.get("body")
    return None, alert if isinstance(alert, str) else None


@dataclass(frozen=True)
class Inbox:
    total: int
    unread: int
    messages: list[dict[str, Any]]


def person_inbox(engine: Engine, app_id: str, person: str, topic: str | None, limit: int) -> Inbox:
    """A person's inbox messages (of one topic, or all), newest first, with the counts."""
    i = InboxMessage
    where = [col(i.app_id) == app_id, col(i.external_user_id) == person]
    if topic is not None:
        where.append(col(i.topic) == topic)
    with Session(engine) as s:
        total, unread = s.execute(
            select(func.count(), func.count().filter(col(i.seen_at).is_(None))).where(*where)
        ).one()
        rows = s.execute(
            select(i, col(Message.payload))
            .join(Message, col(Message.id) == col(i.message_id))
            .where(*where)
            .order_by(col(i.created_at).desc(), col(i.id).desc())
            .limit(limit)
        ).all()
    messages = []
    for entry, payload in rows:
        title, body = _content(payload)
        messages.append(
            {
                "messageId": entry.id,
                "bulkId": entry.message_id,
                "topic": entry.topic,
                "title": title,
                "body": body,
                "customPayload": payload.get("data"),
                "sendDateTime": millis(entry.created_at),
                "seen": entry.seen_at is not None,
                "seenDate": millis(entry.seen_at) if entry.seen_at else None,
            }
        )
    return Inbox(total=total, unread=unread, messages=messages)


def check_inbox_ids(engine: Engine, app_id: str, person: str, ids: Sequence[str]) -> None:
    """NotFound naming the first id that is not a message of this person's inbox."""
    with Session(engine) as s:
        found = set(
            s.execute(
                select(col(InboxMessage.id)).where(
                    col(InboxMessage.id).in_(list(ids)),
                    col(InboxMessage.app_id) == app_id,
                    col(InboxMessage.external_user_id) == person,
                )
            ).scalars()
        )
    for mid in ids:
        if mid not in found:
            raise NotFound(f"messageId {mid} is not in the inbox of externalUserId {person}")


def mark_seen(
    engine: Engine, app_id: str, person: str, seen: Sequence[tuple[str, datetime]]
) -> None:
    """Record when each inbox message was seen; the first report stands."""
    with Session(engine) as s:
        for mid, at in seen:
            s.execute(
                update(InboxMessage)
                .where(
                    col(InboxMessage.id) == mid,
                    col(InboxMessage.app_id) == app_id,
                    col(InboxMessage.external_user_id) == person,
                    col(InboxMessage.seen_at).is_(None),
                )
                .values(seen_at=at)
            )
        s.commit()
