"""What the worker tells the rest of the system after it records outcomes.

Every recorded chunk announces its Messages on Redis pub/sub (schemas.queueing
.progress_channel), so an API request waiting for results (the SAP push routes) wakes at
once instead of polling SQL. Announcing is best effort: the SQL rows are the truth, a
waiter that misses an announcement still times out and reads them.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Sequence

import redis
import structlog
from redis.exceptions import RedisError

from schemas import process
from schemas.queueing import progress_channel
from schemas.settings import Settings
from worker import webhooks
from worker.store import ClaimedDelivery, Record

log = structlog.get_logger("pushline.events")

_client: redis.Redis | None = None
_client_pid: int | None = None
_failed_at = -1e9


def _redis(settings: Settings) -> redis.Redis:
    global _client, _client_pid
    if _client is None or _client_pid != process.pid():  # sockets do not survive fork
        _client = redis.Redis.from_url(
            settings.redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        _client_pid = process.pid()
    return _client


def announce_progress(settings: Settings, message_ids: Iterable[str]) -> None:
    """A PUBLISH for each Message whose Deliveries just changed and that someone waits on.

    A chunk of single-device pushes holds a Message per Delivery, and nearly none has a
    waiter: one PUBSUB NUMSUB for all of them costs less than a PUBLISH each. A waiter
    that subscribes after NUMSUB reads SQL after it, so it sees what was recorded before.
    """
    global _failed_at
    channels = sorted({progress_channel(settings, mid) for mid in message_ids})
    if not channels:
        return
    try:
        client = _redis(settings)
        waited = [name for name, n in client.pubsub_numsub(*channels) if n]
        if waited:
            pipe = client.pipeline(transaction=False)
            for name in waited:
                pipe.publish(name, "1")
            pipe.execute()
    except RedisError as exc:
        now = time.monotonic()
        if now - _failed_at >= 30:
            _failed_at = now
            log.warning("could not announce progress", error=str(exc))


def outcomes_recorded(
    settings: Settings, claimed: Sequence[ClaimedDelivery], finals: Sequence[Record]
) -> None:
    """Called once per chunk after its outcomes are in SQL."""
    if finals:
        by_id = {c.id: c for c in claimed}
        announce_progress(settings, {by_id[f.id].message_id for f in finals if f.id in by_id})
        # Subscribed apps hear MessageSent / MessageFailed (only enqueued here, in batches).
        webhooks.delivery_outcomes(settings, claimed, finals)
