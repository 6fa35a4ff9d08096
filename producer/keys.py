"""API keys after creation: listed (never their secret), revoked, rotated.

Revoking and rotating without overlap announce the old key's hash to every API process
(producer/revocation.py), so the old secret stops working at once everywhere; that is also
SAP's "service key recreated": `rotate` with no overlap gives the same alias and roles a new
secret and kills the old one.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import Engine, select
from sqlmodel import Session, col

from producer.apps import create_key
from producer.errors import InvalidRequest, NotFound
from producer.revocation import announce_revoked
from schemas.admin import MAX_OVERLAP_S, KeyOut, key_state
from schemas.db import session_scope
from schemas.settings import Settings
from schemas.tables import ApiKey, utcnow


def key_out(k: ApiKey, now: datetime | None = None) -> KeyOut:
    return KeyOut(
        id=k.id,
        app_id=k.app_id,
        prefix=k.prefix,
        roles=k.roles.split(","),
        alias=k.alias,
        requests_per_minute=k.requests_per_minute,
        state=key_state(k.revoked_at, k.expires_at, now or utcnow()),
        created_at=k.created_at,
        last_used_at=k.last_used_at,
        expires_at=k.expires_at,
        revoked_at=k.revoked_at,
    )


def list_keys(engine: Engine, app_id: str | None, *, operators: bool = False) -> list[KeyOut]:
    """An app's keys (`app_id`), the operator keys (`operators`), or every key (neither)."""
    q = select(ApiKey).order_by(col(ApiKey.created_at), col(ApiKey.id))
    if app_id is not None:
        q = q.where(col(ApiKey.app_id) == app_id)
    elif operators:
        q = q.where(col(ApiKey.app_id).is_(None))
    now = utcnow()
    with Session(engine) as s:
        return [key_out(k, now) for k in s.execute(q).scalars()]


def get_key(engine: Engine, app_id: str | None, key_id: str) -> ApiKey:
    """A key by id or by its prefix (as listings show it); `app_id` None: any key."""
    with Session(engine) as s:
        q = select(ApiKey).where((col(ApiKey.id) == key_id) | (col(ApiKey.prefix) == key_id))
        found = list(s.execute(q).scalars())
    found = [k for k in found if app_id is None or k.app_id == app_id]
    if len(found) != 1:
        raise NotFound(f"key {key_id!r} not found" + (" (ambiguous prefix)" if found else ""))
    return found[0]


def revoke_key(engine: Engine, settings: Settings, app_id: str | None, key_id: str) -> KeyOut:
    """The key stops working at once in every API process; revoking twice is harmless."""
    now = utcnow()
    with session_scope(engine) as s:
        rec = s.get(ApiKey, get_key(engine, app_id, key_id).id)
        assert rec is not None
        if rec.revoked_at is None:
            rec.revoked_at = now
        out = key_out(rec, now)
        key_hash = rec.key_hash
    announce_revoked(settings.redis_url, settings.redis_key_prefix, [key_hash])
    return out


def rotate_key(
    engine: Engine, settings: Settings, app_id: str | None, key_id: str, overlap_s: int = 0
) -> tuple[str, KeyOut, KeyOut]:
    """A new secret with the old key's app, roles, alias and quota. The old secret works
    `overlap_s` longer (0: it stops at once). Returns (new secret, new key, old key)."""
    if not 0 <= overlap_s <= MAX_OVERLAP_S:
        raise InvalidRequest(
            f"overlap_s: must be between 0 and {MAX_OVERLAP_S}",
            [{"field": "overlap_s", "rule": f"0 to {MAX_OVERLAP_S} seconds"}],
        )
    old = get_key(engine, app_id, key_id)
    if old.revoked_at is not None or (old.expires_at is not None and old.expires_at <= utcnow()):
        raise InvalidRequest(f"key {old.prefix}: revoked or expired; create a new key instead")
    secret, new = create_key(
        engine,
        old.app_id,
        old.roles.split(","),
        alias=old.alias,
        requests_per_minute=old.requests_per_minute,
    )
    now = utcnow()
    with session_scope(engine) as s:
        rec = s.get(ApiKey, old.id)
        assert rec is not None
        if overlap_s:
            rec.expires_at = now + timedelta(seconds=overlap_s)
        else:
            rec.revoked_at = now
        old_out = key_out(rec, now)
    if not overlap_s:
        announce_revoked(settings.redis_url, settings.redis_key_prefix, [old.key_hash])
    return secret, key_out(new, now), old_out
