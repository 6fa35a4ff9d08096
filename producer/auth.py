"""API keys and roles: who is calling, for which app, allowed to do what."""

from __future__ import annotations

import time
from dataclasses import dataclass

from sqlalchemy import Engine

from producer.apps import hash_key, lookup_key
from producer.errors import Forbidden, Unauthorized
from schemas.codes import Role

_CACHE_TTL_S = 10.0


@dataclass(frozen=True)
class Caller:
    app_id: str
    key_id: str
    roles: frozenset[str]

    def require(self, *any_of: str) -> None:
        """403 naming the role unless the caller holds one of `any_of` (admin holds all)."""
        if Role.ADMIN in self.roles or any(r in self.roles for r in any_of):
            return
        raise Forbidden(f"this API key lacks the role {' or '.join(any_of)}")


class KeyResolver:
    """Resolves keys with a short cache: one hash lookup per key every few seconds."""

    def __init__(self, engine: Engine) -> None:
        self.engine = engine
        self._cache: dict[str, tuple[float, Caller | None]] = {}

    def resolve(self, key: str | None) -> Caller:
        if not key:
            raise Unauthorized("missing API key: send it in the X-API-Key header")
        digest = hash_key(key)
        hit = self._cache.get(digest)
        now = time.monotonic()
        if hit is None or hit[0] < now:
            rec = lookup_key(self.engine, key)
            caller = (
                Caller(app_id=rec.app_id, key_id=rec.id, roles=frozenset(rec.roles.split(",")))
                if rec
                else None
            )
            hit = (now + _CACHE_TTL_S, caller)
            self._cache[digest] = hit
        if hit[1] is None:
            raise Unauthorized("invalid API key")
        return hit[1]
