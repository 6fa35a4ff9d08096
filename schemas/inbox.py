"""Infobip's inbox: topics per app, and pushes saved to each recipient person's inbox.

A push naming an `inbox_topic` (Infobip `notificationOptions.inboxTopic`) is saved once per
person it reaches, a person being an external user id (Infobip keeps inboxes for
personalised users only; a device without one has no inbox). Both sides write inbox rows
where they write Delivery rows (the API for one device or person, fan-out otherwise), with
these statements, in the same transaction.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from datetime import datetime
from typing import Any

from sqlalchemy import Connection, select
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert

from schemas.db import among
from schemas.tables import InboxMessage, InboxTopic, Registration, new_id, table

TOPIC_MAX = 255


def topic_of(payload: Mapping[str, Any]) -> str | None:
    """The inbox topic a stored payload names (a whole-push field), or None."""
    topic = payload.get("inbox_topic")
    return topic if isinstance(topic, str) else None


def unknown_topic_rule(known: Collection[str], topic: str) -> str | None:
    """Why `topic` cannot be used given the app's `known` topics, or None when it can.
    Topics match exactly: a different case is named, so the caller sees the slip."""
    if topic in known:
        return None
    near = [k for k in known if k.casefold() == topic.casefold()]
    if near:
        return (
            f"no inbox topic {topic!r} in this application: topics are case sensitive"
            f" ({near[0]!r} exists)"
        )
    return f"no inbox topic {topic!r} in this application: create it first"


def app_topics(conn: Connection, app_id: str) -> list[str]:
    t = table(InboxTopic).c
    return list(conn.execute(select(t.name).where(t.app_id == app_id).order_by(t.name)).scalars())


def save_to_inbox(
    conn: Connection,
    message_id: str,
    app_id: str,
    topic: str,
    registration_ids: Collection[str],
    now: datetime,
) -> int:
    """One inbox row per person (external user id) among these registrations; a person
    already holding this Message (another page, a redelivered fan-out) is skipped."""
    r = table(Registration).c
    people = conn.execute(
        select(r.external_user_id)
        .where(among(r.id, registration_ids, conn.dialect.name), r.external_user_id.is_not(None))
        .distinct()
    ).scalars()
    rows = [
        {
            "id": new_id(),
            "app_id": app_id,
            "message_id": message_id,
            "external_user_id": person,
            "topic": topic,
            "created_at": now,
        }
        for person in sorted(people)
    ]
    if not rows:
        return 0
    insert = pg_insert if conn.dialect.name == "postgresql" else sqlite_insert
    stmt = insert(table(InboxMessage)).on_conflict_do_nothing(
        index_elements=["message_id", "external_user_id"]
    )
    conn.execute(stmt, rows)
    return len(rows)
