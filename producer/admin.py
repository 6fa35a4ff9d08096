"""The admin API, `/v1/apps…`: apps, their credentials and their keys, without SQL.

Admin keys only: an operator key (`pushline keys create --admin`, bound to no app) sees
and manages every app and creates apps; an app's key with the role `admin` sees and
manages its own app and its keys. No answer carries a secret, except a new key's value
in the answer that creates it.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter
from sqlalchemy import Engine
from starlette.concurrency import run_in_threadpool

from producer.apps import (
    app_out,
    create_app_checked,
    create_key,
    find_app,
    list_apps,
    parse_roles,
    update_app,
)
from producer.auth import AdminDep, Caller
from producer.errors import Forbidden, NotFound
from producer.keys import key_out, list_keys, revoke_key, rotate_key
from schemas.admin import AppIn, AppOut, AppUpdate, KeyCreated, KeyIn, KeyOut, RotateIn
from schemas.api import ErrorBody
from schemas.settings import Settings

ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 401, 403, 404, 409)
}


def _scope(who: Caller, app: str) -> str:
    """The app's id when `who` may manage it; 404 otherwise (an app key never learns
    whether another tenant's app exists)."""
    if who.operator:
        return app
    if app != who.app_id:
        raise NotFound(f"app {app!r} not found")
    return app


def admin_router(engine: Engine, settings: Settings) -> APIRouter:
    r = APIRouter(prefix="/v1/apps", tags=["apps and keys (admin)"], responses=ERRORS)

    def _app_id(who: Caller, app: str) -> str:
        return _scope(who, find_app(engine, app).id)  # by id or name; 404 alike

    @r.get("", response_model=list[AppOut])
    def apps(who: AdminDep) -> list[AppOut]:
        """Apps: every app for an operator key, its own for an app's admin key."""
        found = list_apps(engine)
        return [app_out(a) for a in found if who.operator or a.id == who.app_id]

    @r.post("", response_model=AppOut, status_code=201)
    async def create(body: AppIn, who: AdminDep) -> AppOut:
        """Create an app (operator keys only). Credentials are checked: a `.p8` must be an
        EC key, a certificate valid now, a service account must mint a token."""
        if not who.operator:
            raise Forbidden("creating apps needs an operator key (pushline keys create --admin)")
        return app_out(await run_in_threadpool(create_app_checked, engine, settings, body))

    @r.get("/{app}", response_model=AppOut)
    def show(app: str, who: AdminDep) -> AppOut:
        """One app (by id, or by name for an operator key): its credentials, never secrets."""
        return app_out(find_app(engine, _app_id(who, app)))

    @r.patch("/{app}", response_model=AppOut)
    def update(app: str, body: AppUpdate, who: AdminDep) -> AppOut:
        """Change the name or credentials (APNs key or certificate, topic, environment; FCM
        service account), checked as on creation; fields left out are kept."""
        return app_out(update_app(engine, settings, _app_id(who, app), body))

    @r.get("/{app}/keys", response_model=list[KeyOut])
    def keys_of(app: str, who: AdminDep) -> list[KeyOut]:
        """The app's keys with their roles, state and last-used time (to the minute)."""
        return list_keys(engine, _app_id(who, app))

    @r.post("/{app}/keys", response_model=KeyCreated, status_code=201)
    def new_key(app: str, body: KeyIn, who: AdminDep) -> KeyCreated:
        """A new key; its value is in this answer only."""
        secret, rec = create_key(
            engine,
            _app_id(who, app),
            parse_roles(body.roles),
            alias=body.alias,
            requests_per_minute=body.requests_per_minute,
        )
        return KeyCreated(**key_out(rec).model_dump(), key=secret)

    @r.post("/{app}/keys/{key_id}/revoke", response_model=KeyOut)
    def revoke(app: str, key_id: str, who: AdminDep) -> KeyOut:
        """The key stops working at once, in every API process."""
        return revoke_key(engine, settings, _app_id(who, app), key_id)

    @r.post("/{app}/keys/{key_id}/rotate", response_model=KeyCreated)
    def rotate(app: str, key_id: str, body: RotateIn, who: AdminDep) -> KeyCreated:
        """A new secret with the same roles and alias (SAP: the service key recreated). The
        old secret works `overlap_s` seconds longer; 0 (the default) stops it at once."""
        secret, new, _old = rotate_key(engine, settings, _app_id(who, app), key_id, body.overlap_s)
        return KeyCreated(**new.model_dump(), key=secret)

    return r
