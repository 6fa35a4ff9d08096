"""Telling every API process at once that a key no longer works.

Each API process caches resolved keys for a few seconds (producer/auth.py). A revoked key
must stop working at once in all of them (SAP: a recreated service key's old secret is dead
immediately), so whoever revokes a key PUBLISHes its hash on a Redis channel, and every
process's resolver drains that channel, without blocking, before it trusts its cache. The
message reaches the subscriber's socket before PUBLISH returns to the revoker, so a request
made after the revocation answered always sees it. While a process is not subscribed (Redis
down, reconnecting) it may have missed a message: it then trusts no cached key at all and
asks the store every time.
"""

from __future__ import annotations

import contextlib
import select
import threading
import time
from collections.abc import Iterable

import redis
import structlog

log = structlog.get_logger("pushline.keys")
_ERRORS = (redis.RedisError, OSError)
RETRY_S = 5.0


def channel(prefix: str) -> str:
    return f"{prefix}pushline:keys:revoked"


def announce_revoked(redis_url: str, prefix: str, key_hashes: Iterable[str]) -> bool:
    """Publishes the hashes; False when Redis could not be told (caches then age out)."""
    try:
        client = redis.Redis.from_url(redis_url, socket_timeout=5, socket_connect_timeout=5)
        with client:
            for h in key_hashes:
                client.publish(channel(prefix), h)
    except _ERRORS as exc:
        log.warning("could not announce a revoked key", error=str(exc))
        return False
    return True


class Revocations:
    """One process's subscription. `drain()` returns the hashes revoked since the last call,
    or None when the subscription is not known to be complete (trust no cache then)."""

    def __init__(self, redis_url: str, prefix: str) -> None:
        self._client = redis.Redis.from_url(redis_url, socket_timeout=2, socket_connect_timeout=2)
        self._channel = channel(prefix)
        self._pubsub: redis.client.PubSub | None = None
        self._retry_at = 0.0
        self._confirmed = False  # the server has answered SUBSCRIBE: nothing is missed since
        self._lock = threading.Lock()

    def drain(self) -> list[str] | None:
        if self._idle():
            return []
        # One thread reads the socket at a time; reading never blocks, so waiting is short.
        if not self._lock.acquire(timeout=0.05):
            return None
        if time.monotonic() < self._retry_at:  # Redis was down a moment ago: no new try yet
            self._lock.release()
            return None
        try:
            return self._drain()
        finally:
            self._lock.release()

    def _idle(self) -> bool:
        """Nothing arrived since the last drain: one poll of the socket, no Redis client
        machinery (this runs on every request). Each drain reads until no whole message is
        left, so anything new is on the socket, not in the client's buffer."""
        pubsub = self._pubsub
        if pubsub is None or not self._confirmed or pubsub.connection is None:
            return False
        sock = getattr(pubsub.connection, "_sock", None)
        if sock is None:
            return False
        try:
            readable, _, _ = select.select([sock], [], [], 0)
        except (OSError, ValueError):
            return False
        return not readable

    def _drain(self) -> list[str] | None:
        try:
            if self._pubsub is None:
                pubsub = self._client.pubsub()
                pubsub.subscribe(self._channel)
                self._pubsub = pubsub
            out: list[str] = []
            lost = False
            while (msg := self._pubsub.get_message(timeout=0.0)) is not None:
                if msg.get("type") == "subscribe":
                    # A second confirmation: redis-py reconnected and subscribed again, and
                    # what was published in between is lost.
                    lost = self._confirmed
                    self._confirmed = True
                elif msg.get("type") == "message" and isinstance(msg.get("data"), bytes):
                    out.append(msg["data"].decode())
            return out if self._confirmed and not lost else None
        except _ERRORS as exc:
            log.warning(
                "key revocation channel lost; keys are looked up every time", error=str(exc)
            )
            self._reset()
            self._retry_at = time.monotonic() + RETRY_S
            return None

    def _reset(self) -> None:
        if self._pubsub is not None:
            with contextlib.suppress(*_ERRORS):
                self._pubsub.close()
        self._pubsub = None
        self._confirmed = False

    def close(self) -> None:
        self._reset()
        self._client.close()
