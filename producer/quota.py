"""Per-key request quota (`ApiKey.requests_per_minute`), shared by every API process.

A fixed one-minute window per key in Redis (INCR + EXPIRE in one pipeline): simple,
exact per window, and cheap. When Redis is down the quota is not enforced: refusing
every request because the counter is unreachable would be worse than a burst.
"""

from __future__ import annotations

import time

import redis
import structlog
from redis.exceptions import RedisError

from producer.errors import TooManyRequests

log = structlog.get_logger("pushline.quota")
WINDOW_S = 60


class RequestQuota:
    def __init__(self, redis_url: str, key_prefix: str = "") -> None:
        self._redis = redis.Redis.from_url(
            redis_url, socket_timeout=1.0, socket_connect_timeout=1.0
        )
        self._prefix = f"{key_prefix}pushline:quota"

    def check(self, key_id: str, per_minute: int | None) -> None:
        """Count one request; 429 with Retry-After when the key's window is full."""
        if not per_minute:
            return
        window = int(time.time()) // WINDOW_S
        name = f"{self._prefix}:{key_id}:{window}"
        try:
            pipe = self._redis.pipeline(transaction=False)
            pipe.incr(name)
            pipe.expire(name, WINDOW_S * 2)
            count = int(pipe.execute()[0])
        except RedisError as exc:
            log.warning("request quota unavailable; not enforced", error=str(exc))
            return
        if count > per_minute:
            retry = WINDOW_S - int(time.time()) % WINDOW_S
            raise TooManyRequests(
                f"this API key is limited to {per_minute} requests per minute; retry in {retry} s",
                retry_after_s=retry,
            )
