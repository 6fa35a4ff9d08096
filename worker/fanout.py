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
from schemas.tables import NOTHING_MATCHED, Message, utcnow
from schemas.targets import AnyTarget, parse_target
from worker import releases, store
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
    if message.local_time:
        return _fan_out_local(
            message, target, settings=settings, engine=engine, enqueue_chunk=enqueue_chunk
        )
    if message.deliver_over_s and message.lane != "priority":
        # Spread evenly: one count of the audience fixes the rate before any chunk goes out.
        _spread(engine, message, store.count_audience(engine, audience(message.app_id, target)))
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


def _spread(engine: Engine, message: Message, devices: int) -> None:
    assert message.deliver_over_s
    rate = spread_rate(devices, message.deliver_over_s, message.max_per_minute)
    store.set_rate(engine, message.id, rate)
    message.max_per_minute = rate
    log.info("campaign spread", message=message.id, devices=devices, per_minute=rate)


def _nothing_matched(
    settings: Settings, engine: Engine, message: Message, detail: str = NOTHING_MATCHED
) -> int:
    store.set_message_state(
        engine,
        message.id,
        MessageState.FAILED,
        code=ResultCode.TARGET_NOT_FOUND,
        detail=detail,
    )
    log.info("nothing matched", message=message.id, target=message.target.get("type"))
    announce_progress(settings, [message.id])
    return 0


def _fan_out_local(
    message: Message,
    target: AnyTarget,
    *,
    settings: Settings,
    engine: Engine,
    enqueue_chunk: ChunkEnqueuer,
) -> int:
    """A local-time run (worker/releases.py): plan its groups once, fan out those due, and
    dispatch the Message once the last group is out."""
    devices, planned = releases.plan_run(engine, message, target, utcnow())
    if devices == 0:
        return _nothing_matched(settings, engine, message)
    if planned and message.deliver_over_s and message.lane != "priority":
        _spread(engine, message, devices)  # over the whole run's audience, once
    enqueued = 0
    for group in releases.take_due(engine, message.id, utcnow()):
        sent = releases.fan_out_group(engine, settings, message, target, group, enqueue_chunk)
        if sent is None:
            log.info("fan-out stopped: cancelled", message=message.id, deliveries=enqueued)
            announce_progress(settings, [message.id])
            return enqueued
        enqueued += sent
        log.info(
            "local-time group fanned out",
            message=message.id,
            deliveries=sent,
            zones=len(group.zones),
            release_at=str(group.release_at),
        )
    if releases.groups_left(engine, message.id) == 0:
        if store.load_messages(engine, [message.id])[message.id].total == 0:
            return _nothing_matched(settings, engine, message, releases.ALL_SKIPPED)
        store.set_message_state(engine, message.id, MessageState.DISPATCHED)
        store.finish_if_done(engine, [message.id])
    announce_progress(settings, [message.id])
    return enqueued
