"""Apps (tenants) and their API keys. A key is shown once; only its hash is stored."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass

from sqlalchemy import Engine, select
from sqlmodel import Session, col

from producer.errors import Conflict, InvalidRequest, NotFound
from schemas.codes import Role
from schemas.db import session_scope
from schemas.tables import ApiKey, App
from schemas.webpush import check_subject, load_vapid_key, new_vapid_pem, public_key_b64

KEY_PREFIX = "pl_"


def hash_key(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def parse_roles(roles: str | list[str]) -> list[str]:
    items = roles.split(",") if isinstance(roles, str) else roles
    out = [r.strip() for r in items if r.strip()]
    valid = {r.value for r in Role}
    unknown = [r for r in out if r not in valid]
    if unknown or not out:
        raise InvalidRequest(
            f"roles: unknown {unknown or 'none given'}; choose from {sorted(valid)}",
            [{"field": "roles", "rule": f"one or more of {sorted(valid)}"}],
        )
    return out


@dataclass(frozen=True)
class ApnsCredentials:
    topic: str
    key_pem: str | None = None
    key_id: str | None = None
    team_id: str | None = None
    cert_pem: str | None = None
    sandbox: bool = False


@dataclass(frozen=True)
class WebPushCredentials:
    """The app's VAPID contact and key pair; without a PEM, a new key pair is generated."""

    subject: str
    private_key_pem: str | None = None


def webpush_columns(creds: WebPushCredentials) -> tuple[str, str]:
    """(private key PEM, subject) checked; InvalidRequest naming the field and the rule."""
    rule = check_subject(creds.subject)
    if rule:
        raise InvalidRequest(
            f"webpush subject: {rule}", [{"field": "webpush_subject", "rule": rule}]
        )
    pem = creds.private_key_pem or new_vapid_pem()
    try:
        load_vapid_key(pem)
    except ValueError as exc:
        raise InvalidRequest(
            f"webpush key: {exc}", [{"field": "webpush_key", "rule": str(exc)}]
        ) from None
    return pem, creds.subject


def create_app(
    engine: Engine,
    name: str,
    *,
    apns: ApnsCredentials | None = None,
    fcm_service_account_json: str | None = None,
    webpush: WebPushCredentials | None = None,
) -> App:
    app = App(name=name)
    if webpush is not None:
        app.webpush_private_key_pem, app.webpush_subject = webpush_columns(webpush)
    if apns is not None:
        if not apns.cert_pem and not (apns.key_pem and apns.key_id and apns.team_id):
            raise InvalidRequest("apns: give a .p8 key with key id and team id, or a certificate")
        app.apns_topic, app.apns_sandbox = apns.topic, apns.sandbox
        app.apns_key_pem, app.apns_key_id, app.apns_team_id = (
            apns.key_pem,
            apns.key_id,
            apns.team_id,
        )
        app.apns_cert_pem = apns.cert_pem
    if fcm_service_account_json is not None:
        try:
            info = json.loads(fcm_service_account_json)
            project_id = info["project_id"]
            info["private_key"], info["client_email"], info["token_uri"]  # noqa: B018
        except (ValueError, KeyError, TypeError) as exc:
            raise InvalidRequest(
                f"fcm service account: not a service account JSON ({exc})"
            ) from exc
        app.fcm_service_account, app.fcm_project_id = fcm_service_account_json, project_id
    with session_scope(engine) as s:
        if s.execute(select(App).where(col(App.name) == name)).first():
            raise Conflict(f"app {name!r} exists already")
        s.add(app)
    return app


def find_app(engine: Engine, name_or_id: str) -> App:
    with Session(engine) as s:
        app = (
            s.get(App, name_or_id)
            or s.execute(select(App).where(col(App.name) == name_or_id)).scalars().first()
        )
    if app is None:
        raise NotFound(f"app {name_or_id!r} not found")
    return app


def webpush_public_key(engine: Engine, app_id: str) -> str:
    """The app's VAPID public key (applicationServerKey); NotFound without Web Push."""
    with Session(engine) as s:
        app = s.get(App, app_id)
    if app is None or not app.webpush_private_key_pem:
        raise NotFound(f"app {app_id} not found or without Web Push credentials")
    return public_key_b64(load_vapid_key(app.webpush_private_key_pem))


def list_apps(engine: Engine) -> list[App]:
    with Session(engine) as s:
        return list(s.execute(select(App).order_by(col(App.name))).scalars())


def create_key(
    engine: Engine,
    app_id: str,
    roles: list[str],
    *,
    alias: str | None = None,
    requests_per_minute: int | None = None,
) -> tuple[str, ApiKey]:
    """Returns the key (the only time it exists in clear) and its stored record.

    `alias` is the user name for Basic authentication (SAP's service key alias);
    `requests_per_minute` a request quota answered with 429 beyond it.
    """
    if requests_per_minute is not None and requests_per_minute < 1:
        raise InvalidRequest(
            "requests_per_minute: must be at least 1",
            [{"field": "requests_per_minute", "rule": "at least 1"}],
        )
    key = KEY_PREFIX + secrets.token_urlsafe(32)
    record = ApiKey(
        app_id=app_id,
        key_hash=hash_key(key),
        prefix=key[:10],
        roles=",".join(roles),
        alias=alias,
        requests_per_minute=requests_per_minute,
    )
    with session_scope(engine) as s:
        s.add(record)
    return key, record


def lookup_key(engine: Engine, key: str) -> ApiKey | None:
    with Session(engine) as s:
        rec = (
            s.execute(
                select(ApiKey).where(
                    col(ApiKey.key_hash) == hash_key(key), col(ApiKey.revoked_at).is_(None)
                )
            )
            .scalars()
            .first()
        )
    return rec
