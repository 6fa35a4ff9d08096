"""Request and response models of the native API (`/v1`), shared with the Python client."""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field

# The payload lives in schemas/payload.py; re-exported so `from schemas.api import ...` works.
from schemas.payload import ALERT_MAX as ALERT_MAX
from schemas.payload import COLLAPSE_ID_MAX_BYTES as COLLAPSE_ID_MAX_BYTES
from schemas.payload import DATA_MAX as DATA_MAX
from schemas.payload import PRIORITY_MAX as PRIORITY_MAX
from schemas.payload import SOUND_MAX as SOUND_MAX
from schemas.payload import TTL_MAX_S as TTL_MAX_S
from schemas.payload import Alert as Alert
from schemas.payload import Payload as Payload
from schemas.payload import PushType as PushType

# The targets live in schemas/targets.py; re-exported so `from schemas.api import ...` works.
from schemas.targets import TARGET_ROLE as TARGET_ROLE
from schemas.targets import ApplicationTarget as ApplicationTarget
from schemas.targets import DeviceTarget as DeviceTarget
from schemas.targets import Target as Target
from schemas.targets import UsersTarget as UsersTarget


class Strict(BaseModel):
    # Unknown fields are errors: a typo must not silently drop part of a notification.
    model_config = ConfigDict(extra="forbid")


class ScheduleSpec(Strict):
    """When to publish. Times are ISO 8601 or, as Backendless sends them, epoch milliseconds."""

    publish_at: datetime | int | None = None
    repeat_every: Annotated[int, Field(ge=1)] | None = None  # seconds
    repeat_expires_at: datetime | int | None = None
    cron: Annotated[str, Field(min_length=1, max_length=120)] | None = None
    timezone: Annotated[str, Field(max_length=64)] = "UTC"


class PushRequest(Strict):
    target: Target
    payload: Payload
    schedule: ScheduleSpec | None = None
    # The same key for the same app within 24 h returns the first Message and sends nothing.
    idempotency_key: Annotated[str, Field(min_length=1, max_length=255)] | None = None


class MessageAccepted(BaseModel):
    """202 answer: a Message (sent now) or a Schedule (`state` "scheduled")."""

    id: str
    state: str
    status_url: str
    next_run_at: datetime | None = None
    replayed: bool = False  # an idempotent repeat: nothing new was sent


class ScheduleOut(BaseModel):
    id: str
    app_id: str
    state: str
    kind: str
    target: dict[str, Any]
    payload: dict[str, Any]
    publish_at: datetime | None
    repeat_every: int | None
    repeat_expires_at: datetime | None
    cron: str | None
    timezone: str
    next_run_at: datetime | None
    runs: int
    last_run_at: datetime | None
    created_at: datetime
    message_ids: list[str] = []


class SchedulePage(BaseModel):
    items: list[ScheduleOut]
    next_cursor: str | None


class MessageStatus(BaseModel):
    id: str
    app_id: str
    state: str
    code: int | None
    detail: str | None
    total: int
    by_status: dict[str, int]
    by_code: dict[str, int]
    created_at: datetime
    dispatched_at: datetime | None
    completed_at: datetime | None


class Attempt(BaseModel):
    """One attempt of a Delivery: when, what the provider answered, the result code, how
    long the provider took and which worker process sent it."""

    at: datetime
    code: int
    answer: str
    ms: float | None = None
    worker: str | None = None


class DeliveryOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    message_id: str
    registration_id: str
    provider: str
    status: str
    code: int | None
    provider_message: str | None
    provider_ref: str | None
    attempts: int
    created_at: datetime
    updated_at: datetime
    sent_at: datetime | None
    received_at: datetime | None = None
    consumed_at: datetime | None = None
    confirmed_at: datetime | None = None
    deleted_at: datetime | None = None  # CM MessageDelete
    dismissed_at: datetime | None = None  # CM MessageDismissed (the status is RECEIVED)
    # Each attempt that got an answer, oldest first.
    history: list[Attempt] | None = None


class EngagementIn(BaseModel):
    """What the app reports for a notification it got (SAP's optional statuses)."""

    model_config = ConfigDict(extra="forbid")

    status: str = Field(description="RECEIVED, CONSUMED or CONFIRMED", examples=["RECEIVED"])


class DeliveryPage(BaseModel):
    items: list[DeliveryOut]
    next_cursor: str | None


Short = Annotated[str, Field(min_length=1, max_length=255)]
Version = Annotated[str, Field(min_length=1, max_length=64)]


class Capability(Strict):
    name: Short
    category: Short | None = None
    value: Annotated[str, Field(max_length=1000)] | None = None


class RegistrationIn(Strict):
    """One installation of the app for one user on one device. Every field is optional,
    but a registration without a token names its provider or platform (pushes to it end
    with code 5, "push token missing", until a token is registered)."""

    token: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    provider: Literal["apns", "fcm"] | None = None
    platform: Literal["ios", "ipados", "android"] | None = None
    device_id: Short | None = None  # may be an IMEI or a phone number (Microbizz)
    username: Short | None = None
    global_user_id: Short | None = None
    external_user_id: Short | None = None
    phone_number: Annotated[str, Field(min_length=3, max_length=32)] | None = None
    email: (
        Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None
    ) = None
    push_group: Short | None = None
    topics: list[Short] | None = None  # replaces the subscriptions when given
    capabilities: list[Capability] | None = None  # replaces them when given
    locale: Annotated[str, Field(max_length=64)] | None = None  # SAP userLocale
    preferred_languages: list[Annotated[str, Field(max_length=64)]] | None = None
    time_zone: Annotated[str, Field(max_length=64)] | None = None
    form_factor: Annotated[str, Field(max_length=32)] | None = None
    device_model: Short | None = None
    device_manufacturer: Short | None = None
    os_version: Version | None = None
    sdk_version: Version | None = None
    app_version: Version | None = None
    device_secure: bool | None = None
    notifications_enabled: bool | None = None
    primary_device: bool | None = None
    custom_attributes: dict[Short, str | int | float | bool | None] | None = None


class RegistrationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    app_id: str
    provider: str
    token: str | None  # None: registered from events before the app sent its token
    platform: str
    device_id: str | None
    username: str | None
    global_user_id: str | None
    external_user_id: str | None
    phone_number: str | None
    email: str | None
    push_group: str | None
    topics: list[str] = []
    capabilities: list[Capability] = []
    locale: str | None
    preferred_languages: list[str] | None
    time_zone: str | None
    form_factor: str | None
    device_model: str | None
    device_manufacturer: str | None
    os_version: str | None
    sdk_version: str | None
    app_version: str | None
    device_secure: bool | None
    notifications_enabled: bool
    primary_device: bool
    custom_attributes: dict[str, Any] | None
    client_id: str | None = None  # CM's clientId, as the installation's events gave it
    active: bool
    deactivated_code: int | None
    deactivated_at: datetime | None
    created_at: datetime
    updated_at: datetime


class TopicsIn(Strict):
    topics: Annotated[list[Short], Field(min_length=1)]


class RegistrationPage(BaseModel):
    items: list[RegistrationOut]
    next_cursor: str | None


class ErrorDetail(BaseModel):
    field: str
    rule: str


class ErrorBody(BaseModel):
    error: str
    message: str
    code: int | None = None  # a service's own error code where it has one (5003, 5030)
    details: list[ErrorDetail] = []


class ReadyOut(BaseModel):
    """Readiness: `checks` names each part (database, redis, each queue, scheduler) with
    "ok" or what is wrong and how to fix it."""

    status: Literal["ok", "not ready"]
    checks: dict[str, str]
