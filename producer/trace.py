"""One id's whole story: a Message's or a Delivery's timeline, read from the store."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime

from sqlalchemy import Engine, select
from sqlmodel import Session, col

from producer.errors import NotFound
from schemas.codes import CODE_MEANINGS
from schemas.tables import Delivery, Message, WebhookPost, WebhookPostSubject

MAX_DELIVERIES = 20  # a broadcast's story lists its first Deliveries; status has the counts


@dataclass(frozen=True)
class Event:
    at: datetime
    what: str
    subject: str  # the Message or Delivery id it happened to
    detail: str = ""


def _when(value: object) -> datetime | None:
    if isinstance(value, datetime):
        return value
    if isinstance(value, str):
        return datetime.fromisoformat(value)
    return None


def message_events(m: Message) -> list[Event]:
    out = [Event(m.created_at, "accepted", m.id, f"lane {m.lane}")]
    if m.dispatched_at:
        out.append(Event(m.dispatched_at, "fanned out", m.id, f"{m.total} deliveries"))
    if m.completed_at:
        code = f", code {m.code}" if m.code is not None else ""
        out.append(Event(m.completed_at, m.state, m.id, f"{m.detail or ''}{code}".strip(", ")))
    return out


def delivery_events(d: Delivery) -> list[Event]:
    out = [Event(d.created_at, "queued", d.id, f"{d.provider}, registration {d.registration_id}")]
    for n, a in enumerate(d.history or [], 1):
        at = _when(a.get("at"))
        if at is None:
            continue
        code = a.get("code")
        took = f", {a['ms']} ms" if a.get("ms") is not None else ""
        meaning = f"code {code} ({CODE_MEANINGS.get(code, '?')})" if code is not None else "no code"
        detail = f"{meaning}: {a.get('answer', '')}{took}"
        out.append(Event(at, f"attempt {n}", d.id, f"{detail}, by {a.get('worker', '?')}"))
    if d.status != "QUEUED":
        final = d.sent_at or d.updated_at
        out.append(Event(final, f"final {d.status}", d.id, f"code {d.code}"))
    for label, at in (
        ("reported received", d.received_at),
        ("reported consumed", d.consumed_at),
        ("reported confirmed", d.confirmed_at),
        ("reported deleted", d.deleted_at),
        ("reported dismissed", d.dismissed_at),
    ):
        if at is not None:
            out.append(Event(at, label, d.id))
    return out


def _aware(e: Event) -> float:
    # SQLite hands back naive datetimes; Pushline writes UTC everywhere.
    return (e.at if e.at.tzinfo else e.at.replace(tzinfo=UTC)).timestamp()


def trace(engine: Engine, any_id: str, app_id: str | None = None) -> list[Event]:
    """The timeline of a Message (with its first Deliveries) or of one Delivery (with its
    Message), oldest first."""
    with Session(engine) as s:
        d = s.get(Delivery, any_id)
        m = s.get(Message, d.message_id if d else any_id)
        if m is None or (app_id is not None and m.app_id != app_id):
            raise NotFound(f"no message or delivery {any_id}")
        deliveries = (
            [d]
            if d is not None
            else list(
                s.execute(
                    select(Delivery)
                    .where(col(Delivery.message_id) == m.id)
                    .order_by(col(Delivery.id))
                    .limit(MAX_DELIVERIES)
                ).scalars()
            )
        )
        posts = s.execute(
            select(WebhookPost)
            .join(WebhookPostSubject, col(WebhookPostSubject.post_id) == col(WebhookPost.id))
            .where(col(WebhookPostSubject.subject_id).in_([m.id, *(x.id for x in deliveries)]))
            .distinct()
            .order_by(col(WebhookPost.at))
            .limit(MAX_DELIVERIES)
        ).scalars()
        events = message_events(m)
        events += [_webhook_event(p, m.id) for p in posts]
    for one in deliveries:
        events.extend(delivery_events(one))
    return sorted(events, key=_aware)


def _webhook_event(p: WebhookPost, message_id: str) -> Event:
    detail = f"{p.events} events, attempt {p.attempt}, webhook {p.webhook_id}"
    return Event(
        p.at, f"webhook {p.outcome}", message_id, detail + (f": {p.error}" if p.error else "")
    )
