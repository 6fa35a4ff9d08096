"""Registering devices: the token rules (pure) and the upsert (I/O)."""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, Literal

from sqlalchemy import Engine, and_, delete, select
from sqlmodel import Session, col

from producer.errors import InvalidRequest, NotFound
from schemas.api import Capability, RegistrationIn, RegistrationOut, WebPushKeys
from schemas.db import session_scope
from schemas.tables import (
    Registration,
    RegistrationCapability,
    RegistrationGlobalUser,
    RegistrationTopic,
    new_id,
    utcnow,
)
from schemas.targets import phone_digits
from schemas.webpush import check_auth, check_endpoint, check_p256dh

# Microbizz writes a token as "<platform>:<token>"; these are its two platform names.
_PREFIXES = {"iOS": ("apns", "ios"), "android": ("fcm", "android")}
_APNS_TOKEN = re.compile(r"^(?:[0-9a-fA-F]{2}){32,100}$")
_FCM_TOKEN = re.compile(r"^[A-Za-z0-9_:\-]{20,4096}$")
#: Push Kit tokens: letters, digits and a few symbols (Huawei documents no exact format).
_HMS_TOKEN = re.compile(r"^[A-Za-z0-9_:+/=.\-]{20,512}$")
#: The provider a platform is delivered through unless the registration names another.
_PLATFORM_PROVIDER = {"ios": "apns", "ipados": "apns", "android": "fcm", "web": "webpush"}
#: Every provider that may deliver to a platform (Huawei devices without Google services
#: are Android devices reached through Push Kit).
_PLATFORM_PROVIDERS = {
    "ios": ("apns",),
    "ipados": ("apns",),
    "android": ("fcm", "hms"),
    "web": ("webpush",),
}
_PROVIDER_PLATFORM = {"apns": "ios", "fcm": "android", "webpush": "web", "hms": "android"}


#: What names an installation: its device id alone (Microbizz: one phone, whoever is
#: logged in), or its user on its device (SAP).
Identity = Literal["device", "user_device"]


@dataclass(frozen=True)
class NormalisedToken:
    provider: str
    platform: str
    token: str
    webpush_keys: tuple[str, str] | None = None  # (p256dh, auth), base64url without padding


def normalise_token(
    token: str,
    provider: str | None,
    platform: str | None,
    keys: WebPushKeys | None = None,
) -> NormalisedToken:
    """Work out provider, platform and the bare token; raise InvalidRequest naming the rule."""
    if keys is not None or provider == "webpush" or platform == "web":
        return _webpush(token, provider, platform, keys)
    head, sep, rest = token.partition(":")  # split at the first colon: FCM tokens contain more
    if sep and head in _PREFIXES:
        provider_p, platform_p = _PREFIXES[head]
        if provider and provider != provider_p:
            raise _bad("token", f"prefix '{head}:' means provider {provider_p}, not {provider}")
        provider, platform, token = provider_p, platform or platform_p, rest
    elif provider is None and platform is None:
        if sep and head.lower() in ("ios", "android"):
            raise _bad("token", f"platform prefix must be written 'iOS' or 'android', not '{head}'")
        raise _bad(
            "token",
            "give provider or platform, or write the token as 'iOS:<token>' or 'android:<token>'",
        )
    if platform and provider is None:
        provider = _PLATFORM_PROVIDER[platform]
    assert provider is not None
    platform = platform or _PROVIDER_PLATFORM[provider]
    if provider not in _PLATFORM_PROVIDERS[platform]:
        raise _bad("platform", f"platform {platform} is not delivered through {provider}")
    if provider == "apns" and not _APNS_TOKEN.match(token):
        raise _bad("token", "an APNs device token is 64 to 200 hexadecimal characters")
    if provider == "fcm" and not _FCM_TOKEN.match(token):
        raise _bad("token", "an FCM registration token is 20+ characters of [A-Za-z0-9_:-]")
    if provider == "hms" and not _HMS_TOKEN.match(token):
        raise _bad("token", "a Huawei Push Kit token is 20 to 512 characters of [A-Za-z0-9_:+/=.-]")
    if provider == "apns":
        token = token.lower()
    return NormalisedToken(provider=provider, platform=platform, token=token)


def _webpush(
    endpoint: str, provider: str | None, platform: str | None, keys: WebPushKeys | None
) -> NormalisedToken:
    """A W3C push subscription: the endpoint is the token, the keys travel beside it."""
    if provider not in (None, "webpush"):
        raise _bad("keys", f"only Web Push subscriptions have keys, not provider {provider}")
    if platform not in (None, "web"):
        raise _bad("platform", f"platform {platform} is not delivered through webpush")
    rule = check_endpoint(endpoint)
    if rule:
        raise _bad("token", f"{rule} (the subscription's endpoint)")
    if keys is None:
        raise _bad("keys", "required for Web Push: the subscription's keys.p256dh and keys.auth")
    checks = (("p256dh", keys.p256dh, check_p256dh), ("auth", keys.auth, check_auth))
    for name, value, check in checks:
        broken = check(value)
        if broken:
            raise _bad(f"keys.{name}", broken)
    normal = (keys.p256dh.rstrip("="), keys.auth.rstrip("="))
    return NormalisedToken("webpush", "web", endpoint, normal)


def _bad(field: str, rule: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {rule}", [{"field": field, "rule": rule}])


SCALAR_FIELDS = (
    "device_id",
    "username",
    "global_user_id",
    "external_user_id",
    "push_group",
    "locale",
    "preferred_languages",
    "time_zone",
    "form_factor",
    "device_model",
    "device_manufacturer",
    "os_version",
    "sdk_version",
    "app_version",
    "device_secure",
    "notifications_enabled",
    "primary_device",
    "custom_attributes",
)


def normalise_phone(number: str) -> str:
    """International numbers compare by digits: '+45 12 34', '0045-1234' and '451234' agree."""
    try:
        return phone_digits(number)
    except ValueError:
        raise _bad("phone_number", "an international number with at least 3 digits") from None


def normalise_registration(
    body: RegistrationIn,
) -> tuple[NormalisedToken | None, str | None, str | None]:
    """(token, provider, platform) a registration body states. Without a token, provider
    and platform come from the body alone (None: keep those of the known registration)."""
    if body.token is not None:
        norm = normalise_token(body.token, body.provider, body.platform, body.keys)
        return norm, norm.provider, norm.platform
    if body.keys is not None:
        raise _bad("token", "a Web Push subscription's keys come with its endpoint as the token")
    provider: str | None = body.provider
    platform: str | None = body.platform
    if platform is not None:
        if provider is not None and provider not in _PLATFORM_PROVIDERS[platform]:
            raise _bad("platform", f"platform {platform} is not delivered through {provider}")
        provider = provider or _PLATFORM_PROVIDER[platform]
    elif provider is not None:
        platform = _PROVIDER_PLATFORM[provider]
    return None, provider, platform


def upsert_registration(
    engine: Engine, app_id: str, body: RegistrationIn, *, identity: Identity = "user_device"
) -> tuple[RegistrationOut, bool]:
    """Create or update a registration; returns it and whether it was created.

    `user_device` (native and SAP routes): one user on one device, so (username, device id)
    names it, or (username, token) without a device id; a new registration without a device
    id is given one. `device` (Microbizz, CM, Backendless): the device id alone, or the token.
    A token moving to another device leaves the registrations that held it there. Without a
    token, a known registration keeps its own; a new one is registered without (code 5).
    """
    norm, provider, platform = normalise_registration(body)
    phone = normalise_phone(body.phone_number) if body.phone_number else None
    with session_scope(engine) as s:
        reg = _identify(s, app_id, body, norm, identity)
        created = reg is None
        if reg is None:
            if provider is None or platform is None:
                raise _bad("token", "give a token, or provider or platform to register without")
            reg = Registration(app_id=app_id, provider=provider, token=None, platform=platform)
            if identity == "user_device" and body.device_id is None:
                reg.device_id = new_id()  # SAP: "a unique device ID is provided"
        if provider is not None and platform is not None:
            if provider != reg.provider and norm is None:
                # The old token (and a subscription's keys) belong to the other provider.
                reg.token, reg.webpush_p256dh, reg.webpush_auth = None, None, None
            reg.provider, reg.platform = provider, platform
        if norm is not None:
            reg.token = norm.token
            reg.webpush_p256dh, reg.webpush_auth = norm.webpush_keys or (None, None)
        for field in SCALAR_FIELDS:
            value = getattr(body, field)
            if value is not None:
                setattr(reg, field, value)
        if phone is not None:
            reg.phone_number = phone
        if body.email is not None:
            reg.email = body.email.lower()
        # Registering again revives a token the provider had retired.
        reg.active, reg.deactivated_code, reg.deactivated_at = True, None, None
        reg.updated_at = utcnow()
        s.add(reg)
        s.flush()
        if norm is not None:
            _release_token(s, reg, identity)
        if reg.global_user_id is not None:
            _remember_global_user(s, reg)
        if body.topics is not None:
            _replace_topics(s, reg, body.topics)
        if body.capabilities is not None:
            s.execute(
                delete(RegistrationCapability).where(
                    col(RegistrationCapability.registration_id) == reg.id
                )
            )
            s.add_all(
                RegistrationCapability(
                    registration_id=reg.id,
                    app_id=app_id,
                    name=c.name,
                    category=c.category,
                    value=c.value,
                )
                for c in {c.name: c for c in body.capabilities}.values()
            )
        s.flush()
        s.refresh(reg)
        return registration_out(s, reg), created


def _identify(
    s: Session, app_id: str, body: RegistrationIn, norm: NormalisedToken | None, identity: Identity
) -> Registration | None:
    token = col(Registration.token) == norm.token if norm is not None else None
    if identity == "device":
        if body.device_id:
            found = _one(s, app_id, col(Registration.device_id) == body.device_id)
            if found is not None:
                return found
        return _one(s, app_id, token) if token is not None else None
    user = (
        col(Registration.username) == body.username
        if body.username is not None
        else col(Registration.username).is_(None)
    )
    if body.device_id:
        return _one(s, app_id, and_(col(Registration.device_id) == body.device_id, user))
    return _one(s, app_id, and_(token, user)) if token is not None else None


def _release_token(s: Session, reg: Registration, identity: Identity) -> None:
    """The token moved to `reg`: registrations of other devices that held it go. (Other
    users' registrations on the same device keep it: SAP's shared device.)"""
    holders = select(Registration).where(
        col(Registration.app_id) == reg.app_id,
        col(Registration.token) == reg.token,
        col(Registration.id) != reg.id,
    )
    for other in s.execute(holders).scalars():
        same_device = reg.device_id is not None and other.device_id == reg.device_id
        if identity == "device" or not same_device:
            s.delete(other)
    s.flush()


def _remember_global_user(s: Session, reg: Registration) -> None:
    """SAP keeps every Global User ID a registration had: old ones still reach it."""
    assert reg.global_user_id is not None
    if s.get(RegistrationGlobalUser, (reg.id, reg.global_user_id)) is None:
        s.add(
            RegistrationGlobalUser(
                registration_id=reg.id, global_user_id=reg.global_user_id, app_id=reg.app_id
            )
        )


def _replace_topics(s: Session, reg: Registration, topics: list[str]) -> None:
    s.execute(delete(RegistrationTopic).where(col(RegistrationTopic.registration_id) == reg.id))
    s.add_all(
        RegistrationTopic(registration_id=reg.id, app_id=reg.app_id, topic=t)
        for t in dict.fromkeys(topics)
    )


def registration_out(s: Session, reg: Registration) -> RegistrationOut:
    topics = s.execute(
        select(col(RegistrationTopic.topic))
        .where(col(RegistrationTopic.registration_id) == reg.id)
        .order_by(col(RegistrationTopic.topic))
    ).scalars()
    caps = s.execute(
        select(RegistrationCapability)
        .where(col(RegistrationCapability.registration_id) == reg.id)
        .order_by(col(RegistrationCapability.name))
    ).scalars()
    out = RegistrationOut.model_validate(reg)
    out.topics = list(topics)
    out.capabilities = [Capability(name=c.name, category=c.category, value=c.value) for c in caps]
    return out


def _one(s: Session, app_id: str, cond: Any) -> Registration | None:
    """The most recently updated registration of the app meeting `cond`."""
    q = (
        select(Registration)
        .where(col(Registration.app_id) == app_id, cond)
        .order_by(col(Registration.updated_at).desc())
    )
    return s.execute(q).scalars().first()


def _owned(s: Session, app_id: str, registration_id: str) -> Registration:
    reg = s.get(Registration, registration_id)
    if reg is None or reg.app_id != app_id:
        raise NotFound(f"registration {registration_id} not found")
    return reg


def get_registration(engine: Engine, app_id: str, registration_id: str) -> RegistrationOut:
    with Session(engine) as s:
        return registration_out(s, _owned(s, app_id, registration_id))


def list_registrations(
    engine: Engine,
    app_id: str,
    *,
    username: str | None = None,
    push_group: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> tuple[list[RegistrationOut], str | None]:
    """Keyset page by id; `cursor` is the last id of the previous page."""
    q = select(Registration).where(col(Registration.app_id) == app_id)
    if username is not None:
        q = q.where(col(Registration.username) == username)
    if push_group is not None:
        q = q.where(col(Registration.push_group) == push_group)
    if cursor:
        q = q.where(col(Registration.id) > cursor)
    q = q.order_by(col(Registration.id)).limit(limit + 1)
    with Session(engine) as s:
        rows = list(s.execute(q).scalars())
        items = [registration_out(s, r) for r in rows[:limit]]
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return items, next_cursor


def subscribe(
    engine: Engine, app_id: str, registration_id: str, topics: list[str]
) -> RegistrationOut:
    with session_scope(engine) as s:
        reg = _owned(s, app_id, registration_id)
        have = set(
            s.execute(
                select(col(RegistrationTopic.topic)).where(
                    col(RegistrationTopic.registration_id) == reg.id
                )
            ).scalars()
        )
        s.add_all(
            RegistrationTopic(registration_id=reg.id, app_id=app_id, topic=t)
            for t in dict.fromkeys(topics)
            if t not in have
        )
        s.flush()
        return registration_out(s, reg)


def unsubscribe(engine: Engine, app_id: str, registration_id: str, topic: str) -> RegistrationOut:
    with session_scope(engine) as s:
        reg = _owned(s, app_id, registration_id)
        s.execute(
            delete(RegistrationTopic).where(
                col(RegistrationTopic.registration_id) == reg.id,
                col(RegistrationTopic.topic) == topic,
            )
        )
        return registration_out(s, reg)


def delete_registration(engine: Engine, app_id: str, registration_id: str) -> None:
    with session_scope(engine) as s:
        s.delete(_owned(s, app_id, registration_id))
