"""Backendless `user-token`s that Pushline issues: made with an admin key, each naming a
user and where that user may publish (all channels, some, or none). Only a hash is kept;
the token is shown once."""

from __future__ import annotations

import secrets

from sqlalchemy import Engine, select
from sqlmodel import Session, col

from producer.apps import hash_key
from producer.errors import NotFound
from schemas import backendless as bl
from schemas.tables import UserToken, utcnow

TOKEN_PREFIX = "pl_ut_"


def issue(engine: Engine, app_id: str, spec: bl.UserTokenIn) -> tuple[str, UserToken]:
    """A new token for `spec.user`; returns (the token, its row)."""
    token = TOKEN_PREFIX + secrets.token_urlsafe(32)
    row = UserToken(
        app_id=app_id,
        token_hash=hash_key(token),
        user=spec.user,
        publish=spec.publish,
        channels=list(dict.fromkeys(spec.channels)) if spec.channels else None,
    )
    with Session(engine, expire_on_commit=False) as s:
        s.add(row)
        s.commit()
    return token, row


def find(engine: Engine, app_id: str, token: str) -> UserToken | None:
    """The app's live token with this value, or None (unknown, revoked, another app's)."""
    with Session(engine) as s:
        return s.execute(
            select(UserToken).where(
                col(UserToken.token_hash) == hash_key(token),
                col(UserToken.app_id) == app_id,
                col(UserToken.revoked_at).is_(None),
            )
        ).scalar_one_or_none()


def revoke(engine: Engine, app_id: str, token_id: str) -> None:
    with Session(engine) as s:
        row = s.get(UserToken, token_id)
        if row is None or row.app_id != app_id or row.revoked_at is not None:
            raise NotFound(f"no user token {token_id}")
        row.revoked_at = utcnow()
        s.add(row)
        s.commit()


def out(row: UserToken, token: str | None = None) -> bl.UserTokenOut:
    return bl.UserTokenOut(
        objectId=row.id,
        user=row.user,
        publish=row.publish,
        channels=row.channels,
        userToken=token,
    )
