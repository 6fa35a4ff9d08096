"""Retention: Messages older than PUSHLINE_RETENTION_DAYS go, with their Deliveries (and the
attempts kept on them), in small batches so no statement holds locks for long and pushes
keep flowing meanwhile. The scheduler prunes a little every PRUNE_EVERY_S;
`pushline db prune --older-than 30d` prunes everything due at once."""

from __future__ import annotations

import time
from dataclasses import dataclass
from datetime import datetime, timedelta

import structlog
from sqlalchemy import Engine, delete, select
from sqlmodel import col

from schemas.db import session_scope
from schemas.settings import Settings
from schemas.tables import Delivery, Message, WebhookPost, WebhookPostSubject, utcnow

log = structlog.get_logger("pushline.retention")

MESSAGES_PER_BATCH = 200
DELIVERIES_PER_BATCH = 5000
PRUNE_EVERY_S = 60.0
ROUND_BUDGET_S = 2.0  # the scheduler's share per round: publishing schedules comes first

_last_round = 0.0


@dataclass
class Pruned:
    messages: int = 0
    deliveries: int = 0

    def __iadd__(self, other: Pruned) -> Pruned:
        self.messages += other.messages
        self.deliveries += other.deliveries
        return self


def prune_batch(engine: Engine, cutoff: datetime) -> Pruned:
    """Delete up to MESSAGES_PER_BATCH Messages created before `cutoff` and their
    Deliveries, each statement touching at most DELIVERIES_PER_BATCH rows."""
    out = Pruned()
    with session_scope(engine) as s:
        ids = list(
            s.execute(
                select(col(Message.id))
                .where(col(Message.created_at) < cutoff)
                .order_by(col(Message.created_at))
                .limit(MESSAGES_PER_BATCH)
            ).scalars()
        )
    if not ids:
        return out
    while True:
        with session_scope(engine) as s:
            victims = select(col(Delivery.id)).where(col(Delivery.message_id).in_(ids))
            batch = victims.limit(DELIVERIES_PER_BATCH).scalar_subquery()
            gone = s.execute(
                delete(Delivery)
                .where(col(Delivery.id).in_(batch))
                .execution_options(synchronize_session=False)
            ).rowcount  # type: ignore[attr-defined]
        out.deliveries += gone
        if gone < DELIVERIES_PER_BATCH:
            break
    with session_scope(engine) as s:
        out.messages = s.execute(
            delete(Message)
            .where(col(Message.id).in_(ids))
            .execution_options(synchronize_session=False)
        ).rowcount  # type: ignore[attr-defined]
    return out


def prune_webhook_posts(engine: Engine, cutoff: datetime) -> int:
    """Webhook posts older than `cutoff` and their subjects, a batch at a time."""
    with session_scope(engine) as s:
        ids = list(
            s.execute(
                select(col(WebhookPost.id))
                .where(col(WebhookPost.at) < cutoff)
                .limit(DELIVERIES_PER_BATCH)
            ).scalars()
        )
        if ids:
            s.execute(delete(WebhookPostSubject).where(col(WebhookPostSubject.post_id).in_(ids)))
            s.execute(delete(WebhookPost).where(col(WebhookPost.id).in_(ids)))
    return len(ids)


def prune(engine: Engine, older_than: timedelta, budget_s: float | None = None) -> Pruned:
    """Prune until nothing is older than `older_than`, or the time budget is spent."""
    cutoff = utcnow() - older_than
    total = Pruned()
    t0 = time.monotonic()
    while True:
        got = prune_batch(engine, cutoff)
        total += got
        if not got.messages or (budget_s is not None and time.monotonic() - t0 > budget_s):
            break
    while prune_webhook_posts(engine, cutoff) == DELIVERIES_PER_BATCH:
        if budget_s is not None and time.monotonic() - t0 > budget_s:
            break
    if total.messages:
        log.info("pruned", messages=total.messages, deliveries=total.deliveries)
    return total


def prune_some(engine: Engine, settings: Settings) -> Pruned:
    """The scheduler's round: at most every PRUNE_EVERY_S, at most ROUND_BUDGET_S long."""
    global _last_round
    if time.monotonic() - _last_round < PRUNE_EVERY_S:
        return Pruned()
    _last_round = time.monotonic()
    return prune(engine, timedelta(days=settings.retention_days), ROUND_BUDGET_S)
