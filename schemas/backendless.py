"""Backendless messaging (pure): its request and response models, the translation of a
publish body onto the native push, of a device registration onto the native registration,
and of a Message's or Schedule's state onto Backendless's publish status.

Error codes are Backendless's own (its published error-code list); where it has none for
a Pushline condition the HTTP status is the code (409, 503). SEED-NOTES 15-18 apply.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator

from schemas.api import MessageStatus, PushRequest, RegistrationIn, ScheduleOut, ScheduleSpec
from schemas.codes import CODE_MEANINGS, ENGAGEMENT_ORDER, MessageState, Role
from schemas.payload import PayloadError, backendless_payload, check_push
from schemas.scheduling import (
    INVALID_PUBLISH_AT,
    INVALID_REPEAT_EXPIRES_AT,
    ScheduleError,
    plan,
)
from schemas.targets import MAX_NAMES, OS_ALL, parse_os_mask

# --- Backendless error codes used here ------------------------------------------------------
RATE_LIMITED = 999  # "request per second limit has been exhausted"
UNKNOWN_DEVICE = 5000  # retrieving a registration: invalid device id
UNKNOWN_DEVICE_CANCEL = 5001  # cancelling a registration: invalid device id
INVALID_EXPIRATION = INVALID_REPEAT_EXPIRES_AT  # 5003, the seed's "Invalid repeatExpiresAt date"
INVALID_REGISTRATION_EXPIRATION = 5004
BAD_REGISTRATION = 5005  # "Wrong json format for device registration"
NO_PERMISSION = 5007  # "User does not have the permission to publish messages"
MISSING_DEVICE_ID = 5011
PUBLISH_AT = INVALID_PUBLISH_AT  # 5030
BAD_PUSH_MESSAGE = 5041  # "provide message that could be cast to String"
UNPARSEABLE = 8002  # the body is not JSON
MISSING_PARAMETER = 8007
INVALID_PARAMETER = 8008

DEFAULT_CHANNEL = "default"  # Backendless registers a device without channels here


class BackendlessError(ValueError):
    """A request Backendless would refuse: the field (Backendless's name), rule and code."""

    def __init__(self, field: str, rule: str, code: int = INVALID_PARAMETER) -> None:
        super().__init__(f"{field}: {rule}")
        self.field, self.rule, self.code = field, rule, code


# --- publish ----------------------------------------------------------------------------------


class PublishBody(BaseModel):
    """`POST /{application-id}/{REST-api-key}/messaging/{channel-name}` (Backendless names).

    `pushBroadcast`, `publishAt` and `repeatExpiresAt` are checked by `translate_publish`,
    so that each error carries Backendless's code (5030, 5003).
    """

    model_config = ConfigDict(extra="forbid")

    message: Any = Field(
        default=None, description="The notification text (both platforms).", examples=["Hello"]
    )
    headers: dict[str, str | int | float | bool] | None = Field(
        default=None,
        description="ios-alert, ios-badge, ios-sound, android-ticker-text, "
        "android-content-title, android-content-text; any other header reaches the app as data.",
    )
    publisherId: str | None = Field(  # noqa: N815  (Backendless's field name)
        default=None, min_length=1, max_length=255, description="Delivered as data `publisherId`."
    )
    publishPolicy: str | None = Field(  # noqa: N815
        default=None, description="PUSH (default) or BOTH; Pushline has no pub/sub subscribers."
    )
    pushBroadcast: Any = Field(  # noqa: N815
        default=None,
        description="OS mask: IOS=1, ANDROID=2, WP=4, ALL=7 (or those names); WP is skipped.",
        examples=[3, "ALL"],
    )
    pushSinglecast: list[str] | None = Field(  # noqa: N815
        default=None, description="Device ids (the registrations' deviceId)."
    )
    publishAt: Any = Field(  # noqa: N815
        default=None, description="When to publish, epoch milliseconds (5030 if past)."
    )
    repeatEvery: Any = Field(  # noqa: N815
        default=None, description="Publish again every N seconds."
    )
    repeatExpiresAt: Any = Field(  # noqa: N815
        default=None, description="When repeating stops, epoch milliseconds (5003 if invalid)."
    )


class PublishAnswer(BaseModel):
    status: Literal["scheduled", "failed"]
    messageId: str | None  # noqa: N815


@dataclass(frozen=True)
class Publish:
    """A publish translated: the native push and the roles that may send it (any one)."""

    request: PushRequest
    roles: tuple[str, ...]


_SCHEDULE_FIELDS = {
    "schedule.publish_at": "publishAt",
    "schedule.repeat_every": "repeatEvery",
    "schedule.repeat_expires_at": "repeatExpiresAt",
    "schedule": "repeatEvery",
}
# Native payload paths back to the Backendless field that produced them.
_PAYLOAD_FIELDS = (
    ("payload.apns.alert", "headers.ios-alert"),
    ("payload.apns.badge", "headers.ios-badge"),
    ("payload.apns.sound", "headers.ios-sound"),
    ("payload.fcm.ticker", "headers.android-ticker-text"),
    ("payload.fcm.alert", "headers.android-content-title"),
    ("payload.data", "headers"),
    ("payload.alert", "message"),
    ("payload", "message"),
    ("target.device_ids", "pushSinglecast"),
    ("target.channel", "channel-name"),
    ("target.mask", "pushBroadcast"),
)


def backendless_field(native: str) -> str:
    """The Backendless field a native field path came from (for error messages)."""
    for prefix, name in _PAYLOAD_FIELDS:
        if native == prefix or native.startswith(prefix + "."):
            return name
    return native


def _first_error(exc: ValidationError) -> tuple[str, str]:
    err = exc.errors()[0]
    rule = err["msg"].removeprefix("Value error, ")
    return ".".join(str(p) for p in err["loc"]) or "body", rule


def parse_publish(body: Any) -> PublishBody:
    if not isinstance(body, Mapping):
        raise BackendlessError("body", "must be a JSON object", UNPARSEABLE)
    try:
        return PublishBody.model_validate(body)
    except ValidationError as exc:
        field, rule = _first_error(exc)
        if rule == "Extra inputs are not permitted":
            rule = "is not a Backendless publish field"
        raise BackendlessError(field, rule) from None


def _timestamp(value: Any, field: str, code: int) -> int | None:
    """Epoch milliseconds, as Backendless sends them; anything but a number is `code`."""
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise BackendlessError(field, "must be a timestamp in epoch milliseconds", code)
    if isinstance(value, float) and (not math.isfinite(value) or not value.is_integer()):
        raise BackendlessError(field, "must be a whole number of epoch milliseconds", code)
    return int(value)


def schedule_of(body: PublishBody) -> ScheduleSpec | None:
    """publishAt / repeatEvery / repeatExpiresAt as the native schedule (None: publish now)."""
    publish_at = _timestamp(body.publishAt, "publishAt", PUBLISH_AT)
    expires = _timestamp(body.repeatExpiresAt, "repeatExpiresAt", INVALID_EXPIRATION)
    every = body.repeatEvery
    if every is not None and (isinstance(every, bool) or not isinstance(every, int) or every < 1):
        raise BackendlessError("repeatEvery", "must be a whole number of seconds, at least 1")
    if expires is not None and every is None:
        raise BackendlessError(
            "repeatExpiresAt",
            "Invalid repeatExpiresAt date: it needs repeatEvery",
            INVALID_EXPIRATION,
        )
    if publish_at is None and every is None:
        return None
    return ScheduleSpec(publish_at=publish_at, repeat_every=every, repeat_expires_at=expires)


def check_schedule(spec: ScheduleSpec, now: datetime, *, repeat_every_min_s: int) -> None:
    """The native schedule rules, answered in Backendless's names and codes."""
    try:
        plan(spec, now, repeat_every_min_s=repeat_every_min_s)
    except ScheduleError as exc:
        raise BackendlessError(
            _SCHEDULE_FIELDS.get(exc.field, exc.field), exc.rule, exc.code or INVALID_PARAMETER
        ) from None


def _text(value: Any, field: str) -> str:
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, str | int | float):
        return str(value)
    raise BackendlessError(field, "must be text", BAD_PUSH_MESSAGE)


def target_of(body: PublishBody, channel: str) -> tuple[dict[str, Any], tuple[str, ...]]:
    """The native target and the roles that may send it.

    pushSinglecast names devices (any channel); pushBroadcast is the channel's devices on the
    masked OSes (SEED-NOTES 15); neither is every device of the channel.
    """
    if body.pushBroadcast is not None and body.pushSinglecast is not None:
        raise BackendlessError("pushBroadcast", "give pushBroadcast or pushSinglecast, not both")
    if body.pushSinglecast is not None:
        ids = list(dict.fromkeys(body.pushSinglecast))
        if not ids or any(not i or len(i) > 255 for i in ids):
            raise BackendlessError("pushSinglecast", "must list device ids of 1 to 255 characters")
        if len(ids) > MAX_NAMES:
            raise BackendlessError("pushSinglecast", f"lists at most {MAX_NAMES} device ids")
        roles = (Role.PUSH_SINGLE, Role.PUSH_MULTIPLE) if len(ids) == 1 else (Role.PUSH_MULTIPLE,)
        return {"type": "device_ids", "device_ids": ids}, tuple(roles)
    mask = OS_ALL
    if body.pushBroadcast is not None:
        try:
            mask = parse_os_mask(body.pushBroadcast)
        except ValueError as exc:
            raise BackendlessError("pushBroadcast", str(exc)) from None
    return {"type": "os_mask", "mask": mask, "channel": channel}, (Role.PUSH_ALL,)


def payload_of(body: PublishBody) -> dict[str, Any]:
    message = None if body.message is None else _text(body.message, "message")
    headers = {k: _text(v, f"headers.{k}") for k, v in (body.headers or {}).items()}
    if body.publisherId is not None and "publisherId" not in headers:
        headers["publisherId"] = body.publisherId  # the app can tell who published
    try:
        return backendless_payload(message, headers)
    except ValueError as exc:
        raise BackendlessError("headers.ios-badge", str(exc)) from None


def translate_publish(raw: Any, channel: str, now: datetime, *, repeat_every_min_s: int) -> Publish:
    """A Backendless publish as the native push; BackendlessError names what is wrong."""
    body = parse_publish(raw)
    if body.message is None:  # the seed's body names it without brackets: required
        raise BackendlessError("message", "is required: the notification text", MISSING_PARAMETER)
    policy = (body.publishPolicy or "PUSH").upper()
    if policy not in ("PUSH", "BOTH"):
        raise BackendlessError(
            "publishPolicy",
            f"must be PUSH or BOTH, not {body.publishPolicy!r}: Pushline publishes push "
            "notifications only",
        )
    target, roles = target_of(body, channel)
    payload = payload_of(body)
    spec = schedule_of(body)
    if spec is not None:
        check_schedule(spec, now, repeat_every_min_s=repeat_every_min_s)
    native: dict[str, Any] = {"target": target, "payload": payload}
    if spec is not None:
        native["schedule"] = spec.model_dump(exclude_none=True)
    try:
        request = PushRequest.model_validate(native)
        check_push(request.payload, request.target.model_dump())
    except ValidationError as exc:
        field, rule = _first_error(exc)
        raise BackendlessError(backendless_field(field), rule) from None
    except PayloadError as exc:
        rule = (
            "give a message or headers that show something" if exc.field == "payload" else exc.rule
        )
        raise BackendlessError(backendless_field(exc.field), rule) from None
    return Publish(request=request, roles=roles)


# --- Content-Type and user tokens -------------------------------------------------------------


def json_content_type(header: str | None) -> bool:
    """Whether a Content-Type names JSON: `application/json`, in any case, with parameters
    such as a charset. The seed: it "must be set to application/json … mandatory"."""
    if not header:
        return False
    return header.split(";", 1)[0].strip().lower() == "application/json"


PublishScope = Literal["all", "some", "none"]


class UserTokenIn(BaseModel):
    """A user token to issue: who it is for and where that user may publish."""

    model_config = ConfigDict(extra="forbid")

    user: str = Field(min_length=1, max_length=255, description="the user's name or id")
    publish: PublishScope = Field(description="all channels, some (`channels`), or none")
    channels: list[Annotated[str, Field(min_length=1, max_length=255)]] | None = Field(
        default=None, max_length=MAX_NAMES, description="with publish `some`: the channels"
    )

    @model_validator(mode="after")
    def _channels_with_some(self) -> UserTokenIn:
        if self.publish == "some" and not self.channels:
            raise ValueError("channels: list the channels the user may publish to")
        if self.publish != "some" and self.channels is not None:
            raise ValueError(f"channels: only with publish 'some', not {self.publish!r}")
        return self


class UserTokenOut(BaseModel):
    objectId: str  # noqa: N815  (Backendless's name for an object's id)
    user: str
    publish: PublishScope
    channels: list[str] | None = None
    userToken: str | None = Field(  # noqa: N815
        default=None, serialization_alias="user-token", description="shown once, at creation"
    )


def parse_user_token(body: Any) -> UserTokenIn:
    """The request to issue a user token; BackendlessError names the field."""
    if not isinstance(body, Mapping):
        raise BackendlessError("body", "must be a JSON object", UNPARSEABLE)
    try:
        return UserTokenIn.model_validate(body)
    except ValidationError as exc:
        field, rule = _first_error(exc)
        if field == "body" and ": " in rule:  # a rule across fields names its field first
            field, rule = rule.split(": ", 1)
        raise BackendlessError(field, rule) from None


def may_publish(publish: str, channels: list[str] | None, channel: str) -> bool:
    """A user token's policy for a publish to `channel` (channel names match exactly)."""
    if publish == "all":
        return True
    return publish == "some" and channel in (channels or [])


# --- message status ---------------------------------------------------------------------------

PublishStatus = Literal["published", "scheduled", "cancelled", "failed", "unknown"]


class MessageStatusAnswer(BaseModel):
    messageId: str  # noqa: N815
    status: PublishStatus
    errorMessage: str | None = None  # noqa: N815


_REACHED = frozenset(s.value for s in ENGAGEMENT_ORDER)  # SENT and what the app reported after


def message_publish_status(msg: MessageStatus) -> tuple[PublishStatus, str | None]:
    """A Message's state in Backendless's words.

    Not finished (accepted, dispatched: still being delivered) is "scheduled"; finished with
    at least one device reached is "published"; a message-level failure (nothing matched) or
    a finished Message that reached no device is "failed", with the reason.
    """
    if msg.state == MessageState.FAILED:
        return "failed", msg.detail or CODE_MEANINGS.get(msg.code or 2, "failed")
    if msg.state == MessageState.CANCELLED:
        return "cancelled", msg.detail
    if msg.state != MessageState.DONE:
        return "scheduled", None
    if any(msg.by_status.get(s) for s in _REACHED):
        return "published", None
    reasons = ", ".join(
        f"{n} x code {code} ({CODE_MEANINGS.get(int(code), 'unknown')})"
        for code, n in sorted(msg.by_code.items(), key=lambda kv: int(kv[0]))
    )
    return "failed", f"no device accepted the notification: {reasons or 'no deliveries'}"


def schedule_publish_status(
    sch: ScheduleOut, latest_run: MessageStatus | None
) -> tuple[PublishStatus, str | None]:
    """A delayed publish: "scheduled" while runs are to come (paused too), "cancelled" once
    cancelled, and when finished the status of its last run."""
    if sch.state == "cancelled":
        return "cancelled", None
    if sch.state in ("scheduled", "paused"):
        return "scheduled", None
    if latest_run is None:
        return "unknown", None
    return message_publish_status(latest_run)


# --- device registration ----------------------------------------------------------------------

_OS_PLATFORMS: dict[str, Literal["ios", "android"]] = {"IOS": "ios", "ANDROID": "android"}
_PLATFORM_OS = {"ios": "IOS", "ipados": "IOS", "android": "ANDROID"}


class DeviceRegistrationBody(BaseModel):
    """`POST /{application-id}/{REST-api-key}/messaging/registrations`."""

    model_config = ConfigDict(extra="forbid")

    deviceToken: str = Field(  # noqa: N815
        min_length=1, max_length=4096, description="APNs device token or FCM registration token"
    )
    deviceId: str | None = Field(default=None, max_length=255)  # noqa: N815
    os: str = Field(description="IOS or ANDROID (WP is not supported)")
    osVersion: str | None = Field(default=None, max_length=64)  # noqa: N815
    channels: list[str] | None = Field(
        default=None, description="Channels to register with (added); default: `default`"
    )
    expiration: Any = Field(
        default=None,
        description="Not supported: Pushline does not expire registrations (must be absent).",
    )


class RegistrationAnswer(BaseModel):
    registrationId: str  # noqa: N815


class DeviceRegistrationOut(BaseModel):
    deviceToken: str  # noqa: N815
    deviceId: str  # noqa: N815
    os: str
    osVersion: str | None  # noqa: N815
    channels: list[str]


class CancelAnswer(BaseModel):
    result: bool


@dataclass(frozen=True)
class DeviceRegistration:
    registration: RegistrationIn  # without topics: channels are added, never replaced
    channels: list[str]


def translate_registration(raw: Any) -> DeviceRegistration:
    if not isinstance(raw, Mapping):
        raise BackendlessError("body", "must be a JSON object", BAD_REGISTRATION)
    if raw.get("deviceId") in (None, ""):
        raise BackendlessError("deviceId", "is required", MISSING_DEVICE_ID)
    try:
        body = DeviceRegistrationBody.model_validate(raw)
    except ValidationError as exc:
        field, rule = _first_error(exc)
        if rule == "Extra inputs are not permitted":
            rule = "is not a device registration field"
        raise BackendlessError(field, rule, BAD_REGISTRATION) from None
    if body.expiration not in (None, 0):
        # Without an expiry column a registration would outlive the time the app set:
        # refusing is honest; silently keeping the device would not be.
        raise BackendlessError(
            "expiration",
            "Pushline does not expire registrations: register without expiration and "
            "DELETE the registration when it should end",
            INVALID_REGISTRATION_EXPIRATION,
        )
    os_name = body.os.strip().upper()
    if os_name == "WP":
        raise BackendlessError(
            "os", "WP (Windows Phone) is not a supported platform: use IOS or ANDROID"
        )
    platform = _OS_PLATFORMS.get(os_name)
    if platform is None:
        raise BackendlessError("os", f"must be IOS or ANDROID, not {body.os!r}", BAD_REGISTRATION)
    channels = list(dict.fromkeys(body.channels or [DEFAULT_CHANNEL]))
    if any(not c or len(c) > 255 for c in channels):
        raise BackendlessError("channels", "channel names are 1 to 255 characters")
    assert body.deviceId is not None
    try:
        reg = RegistrationIn(
            token=body.deviceToken,
            platform=platform,
            device_id=body.deviceId,
            os_version=body.osVersion or None,
        )
    except ValidationError as exc:
        field, rule = _first_error(exc)
        raise BackendlessError(registration_field(field), rule, BAD_REGISTRATION) from None
    return DeviceRegistration(registration=reg, channels=channels)


def registration_field(native: str) -> str:
    names = {"token": "deviceToken", "platform": "os", "device_id": "deviceId"}
    return names.get(native, "osVersion" if native == "os_version" else native)


def registration_out(
    token: str, device_id: str, platform: str, os_version: str | None, topics: list[str]
) -> DeviceRegistrationOut:
    return DeviceRegistrationOut(
        deviceToken=token,
        deviceId=device_id,
        os=_PLATFORM_OS.get(platform, platform.upper()),
        osVersion=os_version,
        channels=topics,
    )


# --- errors -----------------------------------------------------------------------------------


def error_code(status: int, code: int | None) -> int:
    """The code of an error answer: the one raised with it, else Backendless's code for the
    HTTP status. A bad key and a missing role are both 5007, "may not publish" (SEED-NOTES
    18), told apart by 401 and 403."""
    if code is not None:
        return code
    by_status = {400: INVALID_PARAMETER, 401: NO_PERMISSION, 403: NO_PERMISSION, 429: RATE_LIMITED}
    return by_status.get(status, status)


class ErrorAnswer(BaseModel):
    """Every Backendless error: exactly these two fields."""

    message: str
    code: int
