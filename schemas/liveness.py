"""Who is alive, and whether the broker still remembers: heartbeats and the broker epoch.

Every worker and scheduler process writes a heartbeat (its role and the queues it consumes)
into one Redis hash every few seconds. Readiness, metrics and the recovery sweep read it to
know which lanes have a live consumer, so work is never re-enqueued into a queue nobody
reads and an operator is told which worker to start.

Every process that leases Deliveries (a pool child running deliver tasks) also beats, under
the name its leases carry (`delivery.leased_by`), into a second hash. The scheduler takes a
holder silent for longer than STALE_AFTER_S, on looks at least CONFIRM_S apart, as dead: its
leases are released and its Deliveries enqueued again at once, and the tasks its worker had
taken from the broker are handed out again, instead of waiting for the lease, the sweep's
grace or the broker's visibility timeout.

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
HOLDERS = "pushline:holders"  # lease holder (host:pid) -> its last beat, Unix seconds
EPOCH = "pushline:epoch"
BEAT_EVERY_S = 5.0
STALE_AFTER_S = 20.0  # four missed beats: the process is gone or hung
FORGET_AFTER_S = 600.0  # a stale entry is dropped from the hash after this long
# A silence is confirmed by a second look this much later, with Redis answering between:
# after a Redis outage every process's last beat is old until it beats again.
CONFIRM_S = 2 * BEAT_EVERY_S

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


def holder_beat(r: redis.Redis, settings: Settings, holder: str, at: float) -> None:
    r.hset(settings.redis_key_prefix + HOLDERS, holder, repr(at))


def read_holders(r: redis.Redis, settings: Settings) -> dict[str, float]:
    """Each lease holder's last beat (unreadable entries are left out)."""
    found = {}
    for name, raw in r.hgetall(settings.redis_key_prefix + HOLDERS).items():
        try:
            found[name.decode() if isinstance(name, bytes) else str(name)] = float(raw)
        except ValueError:
            continue
    return found


def forget_beat(r: redis.Redis, settings: Settings, b: Beat) -> None:
    """A process that stops cleanly takes its beat away and says so: it left nothing to
    recover, even when it comes back under its name before the scheduler looks again."""
    r.hdel(settings.redis_key_prefix + HEARTBEATS, b.name)
    r.set(_stopped_key(settings, b), "1", ex=int(FORGET_AFTER_S))


def stopped_cleanly(r: redis.Redis, settings: Settings, b: Beat) -> bool:
    return bool(r.exists(_stopped_key(settings, b)))


def _stopped_key(settings: Settings, b: Beat) -> str:
    return f"{settings.redis_key_prefix}pushline:stopped:{b.host}:{b.pid}:{b.name}"


def forget_holders(r: redis.Redis, settings: Settings, holders: Iterable[str]) -> None:
    names = list(holders)
    if names:
        r.hdel(settings.redis_key_prefix + HOLDERS, *names)


def silent(last_beats: dict[str, float], now: float) -> set[str]:
    """The processes whose last beat is older than STALE_AFTER_S."""
    return {name for name, at in last_beats.items() if now - at > STALE_AFTER_S}


def confirm_silence(
    suspects: dict[str, float], silent_now: set[str], now: float
) -> tuple[set[str], dict[str, float]]:
    """(the processes now taken as dead, the suspects to keep): a process is dead once it
    has been silent on looks at least CONFIRM_S apart. `suspects` maps each to when it was
    first seen silent (monotonic seconds); one that beat again is no longer a suspect."""
    kept = {name: suspects.get(name, now) for name in silent_now}
    dead = {name for name, since in kept.items() if now - since >= CONFIRM_S}
    return dead, {name: since for name, since in kept.items() if name not in dead}


def replaced(previous: dict[str, Beat], beats: Iterable[Beat]) -> list[Beat]:
    """The worker processes of the last look whose name now beats from another process
    (a worker restarted under the same name): each is gone, as of its last beat."""
    now = {b.name: b for b in beats}
    return [
        old
        for name, old in previous.items()
        if name in now and (now[name].pid, now[name].host) != (old.pid, old.host)
    ]
