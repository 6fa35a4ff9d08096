"""Waiting, briefly, for a Message's outcomes: the SAP push routes answer with results.

The worker PUBLISHes on `progress_channel(settings, message_id)` after each chunk's
outcomes are in SQL and when fan-out fails or finds nothing. A waiter subscribes, reads
the Message's progress once right after subscribing (so an outcome recorded before the
subscription is not missed), then sleeps on the subscription and re-reads only when woken,
with one last read at the deadline. SQL is read in the thread pool with a short-lived
session each time, so no database connection is held while waiting and the event loop
never blocks.
"""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field

import redis.asyncio as aioredis
import structlog
from redis.exceptions import RedisError
from sqlalchemy import Engine, func, select
from sqlmodel import Session, col
from starlette.concurrency import run_in_threadpool

from schemas.codes import DeliveryStatus, MessageState
from schemas.queueing import progress_channel
from schemas.sap import DeliveryResult
from schemas.settings import Settings
from schemas.tables import Delivery, Message

log = structlog.get_logger("pushline.waiter")

#: pushResults list at most this many Deliveries: an answer stays small for a campaign.
MAX_RESULTS = 1000


@dataclass(frozen=True)
class Progress:
    """Where a Message stands: its state and its Deliveries counted by (status, code)."""

    state: str
    code: int | None
    detail: str | None
    total: int
    counts: dict[tuple[str, int | None], int] = field(default_factory=dict)

    @property
    def written(self) -> int:
        return sum(self.counts.values())

    @property
    def queued(self) -> int:
        return sum(n for (status, _), n in self.counts.items() if status == DeliveryStatus.QUEUED)


def settled(p: Progress, fanout_page_size: int) -> bool:
    """Whether nothing about the Message will change without a retry: failed, or fan-out
    finished and no Delivery is QUEUED.

    Fan-out marks the Message DISPATCHED after it wrote its last page, which may be just
    after the last chunk announced its outcomes. A Message still ACCEPTED whose Deliveries
    are all written (`total` counts them, in the same transaction) on one partial page is
    complete already: fan-out stops after a page shorter than the page size.
    """
    if p.state == MessageState.FAILED:
        return True
    if p.written == 0 or p.queued:
        return False
    if p.state in (MessageState.DISPATCHED, MessageState.DONE):
        return True
    return p.state == MessageState.ACCEPTED and p.written == p.total < fanout_page_size


def read_progress(engine: Engine, message_id: str) -> Progress:
    with Session(engine) as s:
        msg = s.get(Message, message_id)
        if msg is None:  # removed by a failed enqueue: nothing was accepted
            return Progress(MessageState.FAILED, None, "message is gone", 0)
        rows = s.execute(
            select(col(Delivery.status), col(Delivery.code), func.count())
            .where(col(Delivery.message_id) == message_id)
            .group_by(col(Delivery.status), col(Delivery.code))
        ).all()
        return Progress(
            state=msg.state,
            code=msg.code,
            detail=msg.detail,
            total=msg.total,
            counts={(status, code): n for status, code, n in rows},
        )


def read_results(engine: Engine, message_id: str, limit: int = MAX_RESULTS) -> list[DeliveryResult]:
    """The Message's Deliveries (the first `limit` by id) as SAP results."""
    q = (
        select(Delivery)
        .where(col(Delivery.message_id) == message_id)
        .order_by(col(Delivery.id))
        .limit(limit)
    )
    with Session(engine) as s:
        return [delivery_result(d) for d in s.execute(q).scalars()]


def delivery_result(d: Delivery) -> DeliveryResult:
    return DeliveryResult(
        id=d.id,
        registration_id=d.registration_id,
        provider=d.provider,
        status=d.status,
        code=d.code,
        provider_message=d.provider_message,
        provider_ref=d.provider_ref,
        app_id=d.app_id,
    )


async def wait_for_outcome(
    redis: aioredis.Redis,
    settings: Settings,
    engine: Engine,
    message_id: str,
    timeout_s: float,
) -> Progress:
    """The Message's progress once settled, or as it stands when `timeout_s` runs out."""
    deadline = time.monotonic() + timeout_s
    pubsub = redis.pubsub(ignore_subscribe_messages=True)
    try:
        await pubsub.subscribe(progress_channel(settings, message_id))
    except (RedisError, OSError) as exc:
        # Without announcements the answer still comes from SQL, only later.
        log.warning("progress channel unavailable; answering at the deadline", error=str(exc))
        await pubsub.aclose()
        await asyncio.sleep(max(0.0, deadline - time.monotonic()))
        return await run_in_threadpool(read_progress, engine, message_id)
    try:
        progress = await run_in_threadpool(read_progress, engine, message_id)
        while not settled(progress, settings.fanout_page_size):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                break
            try:
                woken = await pubsub.get_message(timeout=remaining)
            except (RedisError, OSError) as exc:
                log.warning("progress channel lost; answering at the deadline", error=str(exc))
                await asyncio.sleep(max(0.0, deadline - time.monotonic()))
                woken = None
            if woken is None and time.monotonic() < deadline:
                continue  # the subscribe confirmation, or a spurious wake-up: wait on
            progress = await run_in_threadpool(read_progress, engine, message_id)
        return progress
    finally:
        try:
            await pubsub.unsubscribe()
            await pubsub.aclose()
        except (RedisError, OSError):
            pass
