"""Provider lanes shared by every worker process through Redis: a token bucket per (app,
provider), a pause when the provider says the whole project is over quota, and "say it once"
flags for loud log lines.

The decisions (rates, bucket sizes, how long a task may wait) are the pure functions at the
top; `LaneState` is the Redis edge. Redis trouble never stops delivery: the bucket and the
pause fail open, with a warning, since the alternative is sending nothing at all.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from typing import Any

import structlog
from redis import asyncio as aioredis
from redis.exceptions import RedisError

from schemas import process
from schemas.settings import Settings
from schemas.tables import App

log = structlog.get_logger("pushline.ratelimit")

#: A bucket holds a tenth of a second of its rate. In any window of W seconds a bucket lets
#: through at most rate × W + capacity − 1, so a small burst keeps a lane within a quota
#: counted per minute (or per second) while still letting a 500-delivery chunk go at once
#: at FCM's default 10,000 a second.
BURST_S = 0.1
#: Sleep on the process loop for tokens at most this long at a time; longer waits are
#: re-enqueued with a countdown so the worker slot serves other lanes meanwhile.
MAX_SLEEP_S = 2.0
#: Nor wait in one task longer than this share of the claim's lease (the rows are ours only
#: until it ends), and never more than MAX_TASK_WAIT_S.
LEASE_SHARE = 0.25
MAX_TASK_WAIT_S = 30.0

KEY_PREFIX = "pushline"


def lane_rate_per_minute(app: App, provider: str, settings: Settings) -> int | None:
    """The lane's sending rate: the app's own column, else the provider's default (None or
    0: unlimited — Apple publishes no quota)."""
    own: int | None
    default: int | None
    if provider == "fcm":
        own, default = app.fcm_rate_per_minute, settings.fcm_rate_per_minute
    elif provider == "webpush":
        own, default = app.webpush_rate_per_minute, settings.webpush_rate_per_minute
    elif provider == "hms":
        own, default = app.hms_rate_per_minute, settings.hms_rate_per_minute
    else:
        own, default = app.apns_rate_per_minute, settings.apns_rate_per_minute
    rate = own if own is not None else default
    return rate or None


def bucket_capacity(rate_per_minute: int) -> int:
    return max(1, math.floor(rate_per_minute / 60 * BURST_S))


def task_wait_budget_s(lease_s: float) -> float:
    return min(MAX_TASK_WAIT_S, lease_s * LEASE_SHARE)


def sleep_for_tokens(wait_s: float, waited_s: float, budget_s: float) -> bool:
    """Wait on the loop (True) or hand the rest back to the queue (False)?"""
    return wait_s <= MAX_SLEEP_S and waited_s + wait_s <= budget_s


def pause_key(app_id: str, provider: str) -> str:
    return f"{KEY_PREFIX}:pause:{app_id}:{provider}"


def pause_streak_key(app_id: str, provider: str) -> str:
    return f"{KEY_PREFIX}:pause-streak:{app_id}:{provider}"


def bucket_key(app_id: str, provider: str) -> str:
    return f"{KEY_PREFIX}:bucket:{app_id}:{provider}"


# KEYS: bucket, pause. ARGV: tokens per millisecond (0: unlimited), capacity, wanted.
# Returns {granted, milliseconds until more can be granted, paused (0/1)}. Redis's own clock
# keeps every worker on one timeline; the bucket is a hash of tokens and last refill time.
TAKE_LUA = """
local left = redis.call('PTTL', KEYS[2])
if left > 0 then return {0, left, 1} end
local want = tonumber(ARGV[3])
local rate = tonumber(ARGV[1])
if rate <= 0 then return {want, 0, 0} end
local cap = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) * 1000 + tonumber(t[2]) / 1000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'ts')
local tokens = tonumber(state[1])
local ts = tonumber(state[2])
if tokens == nil or ts == nil then
  tokens = cap
  ts = now
end
tokens = math.min(cap, tokens + math.max(0, now - ts) * rate)
local granted = math.min(want, math.floor(tokens))
tokens = tokens - granted
local wait = 0
if granted < want then
  wait = math.ceil((math.min(want - granted, cap) - tokens) / rate)
end
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'ts', tostring(now))
redis.call('PEXPIRE', KEYS[1], math.ceil(cap / rate) + 60000)
return {granted, wait, 0}
"""

# KEYS: pause, streak. ARGV: Retry-After in ms (0: none), then the pause schedule in ms.
# Returns {1 if this call started the pause, its milliseconds left, streak}. A pushback while
# paused only stretches the pause to a longer Retry-After (and how long after it a pushback
# still counts as a repeat); one within a pause's length after it ended is a repeat, and the
# next pause is the schedule's next step.
PAUSE_LUA = """
local left = redis.call('PTTL', KEYS[1])
local ra = tonumber(ARGV[1])
if left > 0 then
  if ra > left then
    redis.call('PEXPIRE', KEYS[1], ra)
    redis.call('PEXPIRE', KEYS[2], ra * 2)
    left = ra
  end
  return {0, left, tonumber(redis.call('GET', KEYS[2]) or '0')}
end
local streak = redis.call('INCR', KEYS[2])
local steps = #ARGV - 1
local len = tonumber(ARGV[1 + math.min(streak, steps)])
if ra > len then len = ra end
redis.call('SET', KEYS[1], streak, 'PX', len)
redis.call('PEXPIRE', KEYS[2], len * 2)
return {1, len, streak}
"""


@dataclass(frozen=True)
class Grant:
    granted: int
    wait_s: float  # until more tokens (or the pause's end)
    paused: bool


@dataclass(frozen=True)
class Pause:
    started: bool  # False: the lane was paused already (by this or another worker)
    left_s: float
    streak: int


class LaneState:
    """The Redis edge of the lanes; use on the process loop (its connections live there)."""

    def __init__(self, redis_url: str) -> None:
        self.redis: Any = aioredis.Redis.from_url(
            redis_url, socket_timeout=2.0, socket_connect_timeout=2.0
        )
        self._take = self.redis.register_script(TAKE_LUA)
        self._pause = self.redis.register_script(PAUSE_LUA)
        self._failed_at = -math.inf

    async def take(
        self, app_id: str, provider: str, want: int, rate_per_minute: int | None
    ) -> Grant:
        rate_per_ms = (rate_per_minute or 0) / 60_000
        capacity = bucket_capacity(rate_per_minute) if rate_per_minute else 0
        try:
            granted, wait_ms, paused = await self._take(
                keys=[bucket_key(app_id, provider), pause_key(app_id, provider)],
                args=[repr(rate_per_ms), capacity, want],
            )
        except RedisError as exc:
            self._redis_failed("take", exc)
            return Grant(want, 0.0, False)
        return Grant(int(granted), int(wait_ms) / 1000, bool(paused))

    async def take_message(self, message_id: str, want: int, rate_per_minute: int) -> Grant:
        """Tokens from a throttled Message's own bucket (shared by every worker sending it)."""
        try:
            granted, wait_ms, _ = await self._take(
                keys=[f"{KEY_PREFIX}:bucket:message:{message_id}", f"{KEY_PREFIX}:never"],
                args=[repr(rate_per_minute / 60_000), bucket_capacity(rate_per_minute), want],
            )
        except RedisError as exc:
            self._redis_failed("take", exc)
            return Grant(want, 0.0, False)
        return Grant(int(granted), int(wait_ms) / 1000, False)

    async def pause(
        self, app_id: str, provider: str, schedule_s: list[float], retry_after_s: float | None
    ) -> Pause | None:
        """Pause the lane for every worker; None when Redis could not be told."""
        try:
            started, left_ms, streak = await self._pause(
                keys=[pause_key(app_id, provider), pause_streak_key(app_id, provider)],
                args=[
                    math.ceil((retry_after_s or 0) * 1000),
                    *(math.ceil(s * 1000) for s in schedule_s),
                ],
            )
        except RedisError as exc:
            self._redis_failed("pause", exc)
            return None
        return Pause(bool(started), int(left_ms) / 1000, int(streak))

    async def first_to_say(self, what: str, every_s: float) -> bool:
        """True for exactly one caller across all workers per `every_s` (Redis down: True)."""
        try:
            return bool(
                await self.redis.set(f"{KEY_PREFIX}:said:{what}", "1", nx=True, ex=int(every_s))
            )
        except RedisError as exc:
            self._redis_failed("first_to_say", exc)
            return True

    async def flagged(self, keys: list[str]) -> list[str]:
        """Those of `keys` that exist, in one round trip (Redis down: none, with a warning;
        the SQL state read with every claim still stops what comes later)."""
        if not keys:
            return []
        try:
            values = await self.redis.mget(keys)
        except RedisError as exc:
            self._redis_failed("flagged", exc)
            return []
        return [k for k, v in zip(keys, values, strict=True) if v is not None]

    def _redis_failed(self, op: str, exc: Exception) -> None:
        now = time.monotonic()
        if now - self._failed_at >= 30:
            self._failed_at = now
            log.warning("lane state unavailable; sending without it", op=op, error=str(exc))


_state: LaneState | None = None
_state_pid: int | None = None


def lane_state(settings: Settings) -> LaneState:
    """This process's LaneState (a forked child builds its own: sockets do not survive fork)."""
    global _state, _state_pid
    if _state is None or _state_pid != process.pid():
        _state, _state_pid = LaneState(settings.redis_url), process.pid()
    return _state
