"""Apps (tenants) and their API keys. A key is shown once; only its hash is stored."""

from __future__ import annotations

import hashlib
import json
import secrets
from dataclasses import dataclass
from datetime import timedelta

from cryptography import x509
from sqlalchemy import Engine, or_, select, update
from sqlmodel import Session, col

from producer.credentials import (
    check_apns_certificate,
    check_apns_key,
    check_hms_client,
    check_service_account,
)
from producer.errors import Conflict, InvalidRequest, NotFound
from schemas.admin import (
    ApnsIn,
    ApnsOut,
    AppIn,
    AppOut,
    AppUpdate,
    FcmIn,
    FcmOut,
    HmsIn,
    HmsOut,
)
from schemas.codes import Role
from schemas.db import session_scope
from schemas.localtime import Quiet
from schemas.settings import Settings
from schemas.tables import ApiKey, App, utcnow
from schemas.webpush import check_subject, load_vapid_key, new_vapid_pem, public_key_b64

KEY_PREFIX = "pl_"
TOUCH_EVERY = timedelta(minutes=1)


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
    hms: HmsIn | None = None,
) -> App:
    """An app stored as given (the stack's and the demo's way: no credential checks)."""
    app = App(name=name)
    if hms is not None:
        app.hms_app_id, app.hms_client_secret = hms.app_id, hms.client_secret
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
    app_id: str | None,
    roles: list[str],
    *,
    alias: str | None = None,
    requests_per_minute: int | None = None,
) -> tuple[str, ApiKey]:
    """Returns the key (the only time it exists in clear) and its stored record.

    `app_id` None makes an operator key: bound to no app, it administers every app through
    the admin API and can do nothing else (it is given the role admin only).

    `alias` is the user name for Basic authentication (SAP's service key alias);
    `requests_per_minute` a request quota answered with 429 beyond it.
    """
    if requests_per_minute is not None and requests_per_minute < 1:
        raise InvalidRequest(
            "requests_per_minute: must be at least 1",
            [{"field": "requests_per_minute", "rule": "at least 1"}],
        )
    if app_id is None:
        roles = [Role.ADMIN.value]
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
    """The key's record when it works now (not revoked, not past a rotation's overlap); its
    last-used time is written at most once a minute."""
    now = utcnow()
    with Session(engine, expire_on_commit=False) as s:
        rec = (
            s.execute(
                select(ApiKey).where(
                    col(ApiKey.key_hash) == hash_key(key),
                    col(ApiKey.revoked_at).is_(None),
                    or_(col(ApiKey.expires_at).is_(None), col(ApiKey.expires_at) > now),
                )
            )
            .scalars()
            .first()
        )
        if rec is not None and (rec.last_used_at is None or rec.last_used_at < now - TOUCH_EVERY):
            s.execute(update(ApiKey).where(col(ApiKey.id) == rec.id).values(last_used_at=now))
            s.commit()
    return rec


def app_out(app: App) -> AppOut:
    """An app as the admin API and the CLI show it: which credentials, never their secrets."""
    apns = None
    if app.apns_topic:
        expires = None
        if app.apns_cert_pem:
            expires = x509.load_pem_x509_certificate(app.apns_cert_pem.encode()).not_valid_after_utc
        apns = ApnsOut(
            topic=app.apns_topic,
            environment="sandbox" if app.apns_sandbox else "production",
            auth="certificate" if app.apns_cert_pem else "key",
            key_id=None if app.apns_cert_pem else app.apns_key_id,
            team_id=None if app.apns_cert_pem else app.apns_team_id,
            certificate_expires_at=expires,
        )
    fcm = None
    if app.fcm_service_account and app.fcm_project_id:
        email = json.loads(app.fcm_service_account).get("client_email")
        fcm = FcmOut(project_id=app.fcm_project_id, client_email=email)
    return AppOut(
        id=app.id,
        name=app.name,
        apns=apns,
        fcm=fcm,
        hms=HmsOut(app_id=app.hms_app_id) if app.hms_app_id else None,
        timezone=app.timezone,
        quiet_hours=app.quiet_hours,
        created_at=app.created_at,
        updated_at=app.updated_at,
    )


def _apply_apns(app: App, given: ApnsIn) -> None:
    """Merges `given` into the stored APNs settings, checking each credential it brings."""
    now = utcnow()
    if given.key_pem is not None:
        check_apns_key(given.key_pem, "apns.key_pem")
        app.apns_key_pem, app.apns_cert_pem = given.key_pem, None
    if given.certificate_pem is not None:
        check_apns_certificate(given.certificate_pem, now, "apns.certificate_pem")
        app.apns_cert_pem, app.apns_key_pem = given.certificate_pem, None
        app.apns_key_id = app.apns_team_id = None
    if given.key_id is not None:
        app.apns_key_id = given.key_id
    if given.team_id is not None:
        app.apns_team_id = given.team_id
    if given.topic is not None:
        app.apns_topic = given.topic
    if given.environment is not None:
        app.apns_sandbox = given.environment == "sandbox"
    if not app.apns_topic:
        raise InvalidRequest(
            "apns.topic: required with APNs credentials (the app's bundle id)",
            [{"field": "apns.topic", "rule": "required"}],
        )
    if not app.apns_cert_pem and not (app.apns_key_pem and app.apns_key_id and app.apns_team_id):
        raise InvalidRequest(
            "apns: give key_pem (.p8) with key_id and team_id, or certificate_pem",
            [{"field": "apns", "rule": "a .p8 key with key id and team id, or a certificate"}],
        )


def _apply_local(app: App, given: AppIn | AppUpdate) -> None:
    """The app's default zone and quiet hours (equal start and end clear them)."""
    if given.timezone is not None:
        app.timezone = given.timezone
    if given.quiet_hours is not None:
        quiet = given.quiet_hours.model_dump()
        app.quiet_hours = quiet if Quiet.of(quiet) else None


def _apply(
    app: App, settings: Settings, apns: ApnsIn | None, fcm: FcmIn | None, hms: HmsIn | None
) -> None:
    if apns is not None:
        _apply_apns(app, apns)
    if fcm is not None:
        text = json.dumps(fcm.service_account)
        app.fcm_project_id = check_service_account(text, settings.fcm_ca_file)
        app.fcm_service_account = text
    if hms is not None:
        check_hms_client(
            hms.app_id, hms.client_secret, settings.hms_token_url, settings.hms_ca_file
        )
        app.hms_app_id, app.hms_client_secret = hms.app_id, hms.client_secret


def create_app_checked(
    engine: Engine,
    settings: Settings,
    given: AppIn,
    webpush: WebPushCredentials | None = None,
) -> App:
    """A new app whose credentials were checked (the CLI's and the admin API's way in)."""
    app = App(name=given.name)
    _apply(app, settings, given.apns, given.fcm, given.hms)
    _apply_local(app, given)
    if webpush is not None:
        app.webpush_private_key_pem, app.webpush_subject = webpush_columns(webpush)
    with session_scope(engine) as s:
        if s.execute(select(App).where(col(App.name) == given.name)).first():
            raise Conflict(f"app {given.name!r} exists already")
        s.add(app)
    return app


def update_app(engine: Engine, settings: Settings, app_id: str, given: AppUpdate) -> App:
    """Changes an app's name or credentials; nothing is stored unless all of it is valid.
    Workers pick new credentials up when they next build the app's sender."""
    with session_scope(engine) as s:
        app = s.get(App, app_id)
        if app is None:
            raise NotFound(f"app {app_id!r} not found")
        if given.name is not None and given.name != app.name:
            if s.execute(select(App).where(col(App.name) == given.name)).first():
                raise Conflict(f"app {given.name!r} exists already")
            app.name = given.name
        _apply(app, settings, given.apns, given.fcm, given.hms)
        _apply_local(app, given)
        app.updated_at = utcnow()
    return app
