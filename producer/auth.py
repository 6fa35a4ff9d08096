"""API keys and roles: who is calling, for which app, allowed to do what.

A key arrives as `X-API-Key` (any case), as HTTP Basic with the key's alias as user name
and the key as password (SAP), or as `Authorization: App <key>` (Infobip). Backendless
puts it in the path; its router passes it to `KeyResolver.resolve` directly.
"""

from __future__ import annotations

import base64
import binascii
import time
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Annotated

from fastapi import Depends, Header, Request
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from producer.apps import hash_key, lookup_key
from producer.errors import Forbidden, Unauthorized
from producer.revocation import Revocations
from schemas.codes import Role
from schemas.tables import utcnow

_CACHE_TTL_S = 10.0
OPERATOR_ONLY = (
    "an operator key administers apps (/v1/apps) and nothing else; push and register with"
    " an app's key"
)


@dataclass(frozen=True)
class Caller:
    app_id: str  # "" for an operator key (bound to no app): see `operator`
    key_id: str
    roles: frozenset[str]
    requests_per_minute: int | None = None

    @property
    def operator(self) -> bool:
        return not self.app_id

    def require(self, *any_of: str) -> None:
        """403 naming the role unless the caller holds one of `any_of` (admin holds all)."""
        if Role.ADMIN in self.roles or any(r in self.roles for r in any_of):
            return
        raise Forbidden(f"this API key lacks the role {' or '.join(any_of)}")


@dataclass(frozen=True)
class Credentials:
    key: str | None
    alias: str | None = None  # Basic authentication's user name: must match the key's alias


def credentials_from(headers: Mapping[str, str]) -> Credentials:
    """The key in a request's headers (`headers` must look names up case-insensitively)."""
    key = headers.get("x-api-key")
    if key:
        return Credentials(key.strip())
    scheme, _, value = (headers.get("authorization") or "").strip().partition(" ")
    if scheme.lower() == "basic" and value:
        try:
            alias, sep, secret = base64.b64decode(value, validate=True).decode().partition(":")
        except (binascii.Error, UnicodeDecodeError):
            raise Unauthorized("malformed Basic authorization header") from None
        if not sep:
            raise Unauthorized("Basic authorization must be alias:key")
        return Credentials(secret, alias)
    if scheme.lower() == "app" and value:
        return Credentials(value.strip())
    return Credentials(None)


class KeyResolver:
    """Resolves keys with a short cache: one hash lookup per key every few seconds."""

    def __init__(self, engine: Engine, revocations: Revocations | None = None) -> None:
        self.engine = engine
        self.revocations = revocations
        self._cache: dict[str, tuple[float, Caller | None, str | None]] = {}

    def resolve(self, key: str | None, alias: str | None = None) -> Caller:
        found = self.cached(key, alias)
        if found is not None:
            return found
        assert key
        rec = lookup_key(self.engine, key)
        caller = (
            Caller(
                app_id=rec.app_id or "",
                key_id=rec.id,
                roles=frozenset(rec.roles.split(",")),
                requests_per_minute=rec.requests_per_minute,
            )
            if rec
            else None
        )
        ttl = _CACHE_TTL_S
        if rec is not None and rec.expires_at is not None:  # a rotated key's overlap ends
            ttl = min(ttl, max(0.0, (rec.expires_at - utcnow()).total_seconds()))
        hit = (time.monotonic() + ttl, caller, rec.alias if rec else None)
        self._cache[hash_key(key)] = hit
        return self._checked(hit, alias)

    def cached(self, key: str | None, alias: str | None = None) -> Caller | None:
        """The Caller from the cache without any I/O; None when the store must be asked."""
        if not key:
            raise Unauthorized(
                "missing API key: send X-API-Key, or Basic authentication with alias and key"
            )
        self._forget_revoked()
        hit = self._cache.get(hash_key(key))
        if hit is None or hit[0] < time.monotonic():
            return None
        return self._checked(hit, alias)

    def _forget_revoked(self) -> None:
        if self.revocations is None:
            return
        revoked = self.revocations.drain()
        if revoked is None:  # not subscribed: a revocation may have been missed
            self._cache.clear()
            return
        for h in revoked:
            self._cache.pop(h, None)

    def forget(self, key_hash: str) -> None:
        self._cache.pop(key_hash, None)

    @staticmethod
    def _checked(hit: tuple[float, Caller | None, str | None], alias: str | None) -> Caller:
        if hit[1] is None:
            raise Unauthorized("invalid API key")
        if alias is not None and alias != hit[2]:
            raise Unauthorized("the alias does not belong to this API key")
        return hit[1]


def authenticate(request: Request, key: str | None = None, alias: str | None = None) -> Caller:
    """The Caller behind a request, counted against the key's request quota. The key comes
    from the headers unless a surface found it elsewhere (Backendless puts it in the path)."""
    if key is None:
        creds = credentials_from(request.headers)
        key, alias = creds.key, creds.alias
    resolver: KeyResolver = request.app.state.keys
    who = resolver.resolve(key, alias)
    if who.operator:
        raise Forbidden(OPERATOR_ONLY)
    request.app.state.quota.check(who.key_id, who.requests_per_minute)
    return who


async def caller(
    request: Request,
    x_api_key: Annotated[str | None, Header(description="the app's API key")] = None,
) -> Caller:
    """FastAPI dependency: an app's key, as X-API-Key, Basic alias:key, or `Authorization:
    App <key>`; an operator key is refused (403)."""
    who = await any_caller(request, x_api_key)
    if who.operator:
        raise Forbidden(OPERATOR_ONLY)
    return who


async def admin_caller(
    request: Request,
    x_api_key: Annotated[
        str | None,
        Header(description="an admin key: an operator key, or an app's key with the role admin"),
    ] = None,
) -> Caller:
    """FastAPI dependency of the admin API (/v1/apps…): an operator key (every app) or an
    app's key with the role admin (its own app only)."""
    who = await any_caller(request, x_api_key)
    if Role.ADMIN not in who.roles:
        raise Forbidden(f"this API key lacks the role {Role.ADMIN}")
    return who


async def any_caller(
    request: Request,
    x_api_key: Annotated[str | None, Header(description="the app's API key")] = None,
) -> Caller:
    """FastAPI dependency: X-API-Key, Basic alias:key, or `Authorization: App <key>`.

    Async so that a known key costs no thread hop: the store and the quota's Redis are
    asked in the thread pool only when they must be."""
    creds = credentials_from(request.headers)
    resolver: KeyResolver = request.app.state.keys
    who = resolver.cached(creds.key, creds.alias)
    if who is None:
        who = await run_in_threadpool(resolver.resolve, creds.key, creds.alias)
    if who.requests_per_minute:
        quota = request.app.state.quota
        await run_in_threadpool(quota.check, who.key_id, who.requests_per_minute)
    return who


CallerDep = Annotated[Caller, Depends(caller)]
AdminDep = Annotated[Caller, Depends(admin_caller)]
