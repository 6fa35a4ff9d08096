"""Fan-out: resolve a Message's target page by page, write QUEUED Deliveries, enqueue chunks."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable

import structlog
from sqlalchemy import Engine

from schemas.audience import audience, page_audience
from schemas.campaigns import spread_rate
from schemas.codes import MessageState, ResultCode
from schemas.settings import Settings
from schemas.tables import NOTHING_MATCHED
from schemas.targets import parse_target
from worker import store
from worker.events import announce_progress

log = structlog.get_logger("pushline.fanout")

ChunkEnqueuer = Callable[[str, list[str], str], None]  # (provider, delivery ids, lane)


def chunks(ids: list[str], size: int) -> list[list[str]]:
    return [ids[i : i + size] for i in range(0, len(ids), size)]


def fan_out(
    message_id: str, *, settings: Settings, engine: Engine, enqueue_chunk: ChunkEnqueuer
) -> int:
    """Returns the number of Deliveries enqueued. Safe to run again for the same Message."""
    message = store.load_messages(engine, [message_id]).get(message_id)
    if message is None:
        log.warning("fan-out for unknown message", message=message_id)
        return 0
    if message.state != MessageState.ACCEPTED:
        return 0  # already fanned out: a duplicate task
    try:
        target = parse_target(message.target)
    except ValueError as exc:  # accepted by an older release, or written by hand into SQL
        store.set_message_state(
            engine,
            message_id,
            MessageState.FAILED,
            code=ResultCode.TARGET_NOT_FOUND,
            detail=f"invalid target: {exc}",
        )
        announce_progress(settings, [message_id])
        log.warning("invalid target", message=message_id, error=str(exc))
        return 0
    if message.deliver_over_s and message.lane != "priority":
        # Spread evenly: one count of the audience fixes the rate before any chunk goes out.
        devices = store.count_audience(engine, audience(message.app_id, target))
        rate = spread_rate(devices, message.deliver_over_s, message.max_per_minute)
        store.set_rate(engine, message_id, rate)
        message.max_per_minute = rate
        log.info("campaign spread", message=message_id, devices=devices, per_minute=rate)
    # Always from the start: a redelivered fan-out re-enqueues what is still QUEUED, and the
    # claim in deliver_chunk makes a duplicate chunk cost a query, never a second send.
    cursor: str | None = None
    enqueued = 0
    while True:
        condition = page_audience(message.app_id, target, cursor)
        page = store.audience_page(engine, condition, cursor, settings.fanout_page_size)
        if not page:
            break
        cursor = page[-1][0]
        queued = store.insert_deliveries(engine, message, page, cursor)
        if queued is None:  # cancelled: this page's rows are too, and no more are written
            log.info("fan-out stopped: cancelled", message=message_id, deliveries=enqueued)
            announce_progress(settings, [message_id])
            return enqueued
        by_provider: dict[str, list[str]] = defaultdict(list)
        for delivery_id, provider in queued:
            by_provider[provider].append(delivery_id)
        for provider, ids in by_provider.items():
            for chunk in chunks(ids, settings.chunk_size):
                enqueue_chunk(provider, chunk, message.lane)
                enqueued += len(chunk)
        if len(page) < settings.fanout_page_size:
            break
    if enqueued == 0 and store.load_messages(engine, [message_id])[message_id].total == 0:
        store.set_message_state(
            engine,
            message_id,
            MessageState.FAILED,
            code=ResultCode.TARGET_NOT_FOUND,
            detail=NOTHING_MATCHED,
        )
        log.info("nothing matched", message=message_id, target=message.target.get("type"))
        announce_progress(settings, [message_id])
        return 0
    store.set_message_state(engine, message_id, MessageState.DISPATCHED)
    store.finish_if_done(engine, [message_id])
    # The last chunk may have been recorded before DISPATCHED was written: say so again.
    announce_progress(settings, [message_id])
    log.info("fanned out", message=message_id, app=message.app_id, deliveries=enqueued)
    return enqueued
