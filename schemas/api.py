"""Request and response models of the native API (`/v1`), shared with the Python client."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

# Limits from the SAP seed; the API answers 400 naming the field and the limit.
ALERT_MAX = 2048
SOUND_MAX = 256
DATA_MAX = 2000
PRIORITY_MAX = 128
COLLAPSE_ID_MAX_BYTES = 64  # apns-collapse-id
TTL_MAX_S = 2_419_200  # FCM's 28 days; APNs has no documented maximum


class Strict(BaseModel):
    # Unknown fields are errors: a typo must not silently drop part of a notification.
    model_config = ConfigDict(extra="forbid")


class Alert(Strict):
    title: str | None = None
    subtitle: str | None = None
    body: str | None = None

    @model_validator(mode="after")
    def _within_limit(self) -> Alert:
        size = sum(len(p or "") for p in (self.title, self.subtitle, self.body))
        if size > ALERT_MAX:
            raise ValueError(f"alert must be at most {ALERT_MAX} characters in all (got {size})")
        return self


PushType = Literal[
    "alert",
    "background",
    "voip",
    "complication",
    "fileprovider",
    "mdm",
    "liveactivity",
    "location",
    "pushtotalk",
]


class Payload(Strict):
    alert: Alert | None = None
    badge: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None  # 0 clears the badge
    sound: Annotated[str, Field(max_length=SOUND_MAX)] | None = None
    data: dict[str, Any] | None = None
    priority: Literal["high", "normal"] = "high"
    time_to_live: Annotated[int, Field(ge=0, le=TTL_MAX_S)] | None = None
    collapse_id: str | None = None
    push_type: PushType | None = None
    content_available: bool = False
    mutable_content: bool = False
    category: Annotated[str, Field(max_length=255)] | None = None
    thread_id: Annotated[str, Field(max_length=255)] | None = None

    @field_validator("alert", mode="before")
    @classmethod
    def _alert_from_text(cls, v: Any) -> Any:
        # A bare string is the body, as in APNs' own "alert": "text" form.
        if isinstance(v, str):
            if len(v) > ALERT_MAX:
                raise ValueError(f"alert must be at most {ALERT_MAX} characters (got {len(v)})")
            return {"body": v}
        return v

    @field_validator("data", mode="before")
    @classmethod
    def _data_object(cls, v: Any) -> Any:
        # SAP sends `data` as an escaped JSON string as well as an object.
        if isinstance(v, str):
            try:
                v = json.loads(v)
            except ValueError as exc:
                raise ValueError(
                    f"data must be a JSON object or its serialized form: {exc}"
                ) from exc
            if not isinstance(v, dict):
                raise ValueError("data must be a JSON object")
        return v

    @field_validator("data")
    @classmethod
    def _data_limit(cls, v: dict[str, Any] | None) -> dict[str, Any] | None:
        if v is not None:
            size = len(json.dumps(v, separators=(",", ":"), ensure_ascii=False))
            if size > DATA_MAX:
                raise ValueError(
                    f"data must be at most {DATA_MAX} characters serialized (got {size})"
                )
        return v

    @field_validator("collapse_id")
    @classmethod
    def _collapse_limit(cls, v: str | None) -> str | None:
        if v is not None and len(v.encode()) > COLLAPSE_ID_MAX_BYTES:
            raise ValueError(f"collapse_id must be at most {COLLAPSE_ID_MAX_BYTES} bytes")
        return v

    @model_validator(mode="after")
    def _not_empty(self) -> Payload:
        if (
            self.alert is None
            and self.badge is None
            and self.sound is None
            and not self.data
            and not self.content_available
        ):
            raise ValueError(
                "payload must carry at least one of alert, badge, sound, data, content_available"
            )
        return self


class DeviceTarget(Strict):
    type: Literal["device"]
    registration_id: str


class UsersTarget(Strict):
    type: Literal["users"]
    usernames: list[Annotated[str, Field(min_length=1, max_length=255)]] = []
    global_user_ids: list[Annotated[str, Field(min_length=1, max_length=255)]] = []

    @model_validator(mode="after")
    def _some_user(self) -> UsersTarget:
        if not self.usernames and not self.global_user_ids:
            raise ValueError("users target needs at least one of usernames, global_user_ids")
        if len(self.usernames) + len(self.global_user_ids) > 10_000:
            raise ValueError("users target lists at most 10000 users")
        return self


class ApplicationTarget(Strict):
    type: Literal["application"]


Target = Annotated[DeviceTarget | UsersTarget | ApplicationTarget, Field(discriminator="type")]

#: Which role a target needs (the SAP seed's roles).
TARGET_ROLE: dict[str, str] = {
    "device": "push_single",
    "users": "push_multiple",
    "application": "push_all",
}


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
    """One installation of the app on one device. Every field but the token is optional."""

    token: Annotated[str, Field(min_length=1, max_length=4096)]
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
    token: str
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
