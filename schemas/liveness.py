"""Who is alive, and whether the broker still remembers: heartbeats and the broker epoch.

Every worker and scheduler process writes a heartbeat (its role and the queues it consumes)
into one Redis hash every few seconds. Readiness, metrics and the recovery sweep read it to
know which lanes have a live consumer, so work is never re-enqueued into a queue nobody
reads and an operator is told which worker to start.

The broker epoch is a random value kept in Redis. Redis losing its contents (FLUSHALL, a
restart without persistence, a failover to an empty replica) loses the epoch with the
tasks; the scheduler sees the change at its next tick and recovers the lost work at once
instead of waiting for a fixed grace period without progress.
"""

from __future__ import annotations

import json
import os
import socket
import time
import uuid
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import redis

from schemas.queueing import DEFAULT_QUEUE, PRIORITY_QUEUE, WEBHOOK_QUEUE
from schemas.settings import Settings

HEARTBEATS = "pushline:heartbeats"
EPOCH = "pushline:epoch"
BEAT_EVERY_S = 5.0
STALE_AFTER_S = 20.0  # four missed beats: the process is gone or hung
FORGET_AFTER_S = 600.0  # a stale entry is dropped from the hash after this long

# Which process serves each queue, as an operator would start it.
HOW_TO_CONSUME = {
    DEFAULT_QUEUE: "pushline worker -Q pushline",
    PRIORITY_QUEUE: "pushline worker -Q pushline.priority",
    WEBHOOK_QUEUE: "pushline worker --pool threads -Q pushline.webhooks",
}


@dataclass(frozen=True)
class Beat:
    name: str
    role: str  # worker | scheduler
    queues: tuple[str, ...] = ()
    at: float = 0.0
    pid: int = 0
    host: str = ""
    extra: dict[str, Any] = field(default_factory=dict)


def expected_queues(settings: Settings) -> tuple[str, ...]:
    """Every queue Pushline writes to with these settings."""
    lanes = (DEFAULT_QUEUE, PRIORITY_QUEUE) if settings.priority_lane else (DEFAULT_QUEUE,)
    return (*lanes, WEBHOOK_QUEUE)


def live(beats: Iterable[Beat], now: float) -> list[Beat]:
    return [b for b in beats if now - b.at <= STALE_AFTER_S]


def consumed(beats: Iterable[Beat]) -> set[str]:
    return {q for b in beats for q in b.queues}


def unconsumed(settings: Settings, beats: Iterable[Beat], now: float) -> list[str]:
    """Queues Pushline writes to that no live worker reads."""
    have = consumed(live(beats, now))
    return [q for q in expected_queues(settings) if q not in have]


def client(settings: Settings) -> redis.Redis:
    return redis.Redis.from_url(
        settings.redis_url, socket_timeout=2, socket_connect_timeout=2, health_check_interval=30
    )


def beat(r: redis.Redis, settings: Settings, b: Beat) -> None:
    r.hset(settings.redis_key_prefix + HEARTBEATS, b.name, json.dumps(asdict(b)))


def read_beats(r: redis.Redis, settings: Settings, now: float | None = None) -> list[Beat]:
    """All recorded beats (stale ones included; `live` filters); entries silent for a long
    time are dropped on the way."""
    now = time.time() if now is None else now
    key = settings.redis_key_prefix + HEARTBEATS
    beats, forget = [], []
    for name, raw in r.hgetall(key).items():
        try:
            data = json.loads(raw)
            b = Beat(**{**data, "queues": tuple(data.get("queues", ()))})
        except (ValueError, TypeError):
            forget.append(name)
            continue
        if now - b.at > FORGET_AFTER_S:
            forget.append(name)
        else:
            beats.append(b)
    if forget:
        r.hdel(key, *forget)
    return beats


def current_epoch(r: redis.Redis, settings: Settings) -> str:
    """The broker's epoch, made if Redis has none (a new or emptied Redis)."""
    key = settings.redis_key_prefix + EPOCH
    r.set(key, uuid.uuid4().hex, nx=True)
    value = r.get(key)
    return value.decode() if isinstance(value, bytes) else str(value)


def process_beat(role: str, name: str, queues: Iterable[str], **extra: Any) -> Beat:
    return Beat(
        name=name,
        role=role,
        queues=tuple(sorted(queues)),
        at=time.time(),
        pid=os.getpid(),
        host=socket.gethostname(),
        extra=extra,
    )
