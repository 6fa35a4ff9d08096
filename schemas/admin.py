"""Apps and API keys as the admin API (`/v1/apps…`) and the CLI show them: never a secret,
except a new key's value in the one answer that creates it."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

from schemas.api import QuietHours, TimeZone

MAX_OVERLAP_S = 30 * 24 * 3600


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class ApnsIn(_Strict):
    """APNs credentials: a `.p8` key with its key id and team id, or a certificate PEM
    (certificate and private key). Fields left out keep their stored value."""

    topic: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    environment: Literal["sandbox", "production"] | None = None
    key_pem: str | None = None
    key_id: Annotated[str, Field(min_length=1, max_length=20)] | None = None
    team_id: Annotated[str, Field(min_length=1, max_length=20)] | None = None
    certificate_pem: str | None = None


class FcmIn(_Strict):
    service_account: dict[str, Any]  # the JSON Google issues, as an object


class HmsIn(_Strict):
    """Huawei Push Kit: the app id and client secret from AppGallery Connect (OAuth 2.0
    client credentials). The secret is stored, never shown again."""

    app_id: Annotated[str, Field(min_length=1, max_length=64, pattern=r"^[0-9]+$")]
    client_secret: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^\S+$")]
_ZONE_HELP = "the time zone (IANA) of devices that name none; UTC unless set"
_QUIET_HELP = (
    "local hours in which campaign-lane deliveries wait (a push's own quiet_hours win); "
    "equal start and end: none"
)


class AppIn(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=200)]
    apns: ApnsIn | None = None
    fcm: FcmIn | None = None
    hms: HmsIn | None = None
    timezone: TimeZone | None = Field(None, description=_ZONE_HELP)
    quiet_hours: QuietHours | None = Field(None, description=_QUIET_HELP)


class AppUpdate(_Strict):
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    apns: ApnsIn | None = None
    fcm: FcmIn | None = None
    hms: HmsIn | None = None
    timezone: TimeZone | None = Field(None, description=_ZONE_HELP)
    quiet_hours: QuietHours | None = Field(None, description=_QUIET_HELP)


class ApnsOut(BaseModel):
    topic: str
    environment: Literal["sandbox", "production"]
    auth: Literal["key", "certificate"]
    key_id: str | None = None
    team_id: str | None = None
    certificate_expires_at: datetime | None = None


class FcmOut(BaseModel):
    project_id: str
    client_email: str | None = None


class HmsOut(BaseModel):
    app_id: str  # the client secret is never shown


class AppOut(BaseModel):
    id: str
    name: str
    apns: ApnsOut | None = None
    fcm: FcmOut | None = None
    hms: HmsOut | None = None
    timezone: str = "UTC"
    quiet_hours: dict[str, str] | None = None
    created_at: datetime
    updated_at: datetime


class KeyIn(_Strict):
    roles: Annotated[list[str], Field(min_length=1)]
    alias: Annotated[str, Field(min_length=1, max_length=100)] | None = None
    requests_per_minute: Annotated[int, Field(ge=1)] | None = None


class RotateIn(_Strict):
    """`overlap_s`: how long the old secret keeps working (0: it stops at once, as when
    SAP recreates a service key)."""

    overlap_s: Annotated[int, Field(ge=0, le=MAX_OVERLAP_S)] = 0


KeyState = Literal["active", "expiring", "expired", "revoked"]


class KeyOut(BaseModel):
    id: str
    app_id: str | None  # None: an operator key (every app, admin API only)
    prefix: str
    roles: list[str]
    alias: str | None = None
    requests_per_minute: int | None = None
    state: KeyState
    created_at: datetime
    last_used_at: datetime | None = None
    expires_at: datetime | None = None
    revoked_at: datetime | None = None


class KeyCreated(KeyOut):
    key: str  # shown this once; only its hash is stored


def key_state(revoked_at: datetime | None, expires_at: datetime | None, now: datetime) -> KeyState:
    if revoked_at is not None:
        return "revoked"
    if expires_at is None:
        return "active"
    return "expiring" if expires_at > now else "expired"
