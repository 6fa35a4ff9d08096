"""Infobip's mobile push API as Pushline reads it (SEED-NOTES 19-24): the request models and
the pure translations, request → native target and payload, Delivery states → Infobip's
statuses and bulk statistics. The routes are in producer/surfaces/infobip.py.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from schemas.codes import DeliveryStatus, ResultCode
from schemas.payload import TTL_MAX_S, infobip_payload
from schemas.targets import DestinationsTarget

#: Infobip: "Minimum value is 30 sec. Maximum value is 72h", default 48 h, unit hours.
VALIDITY_MIN_S = 30
VALIDITY_MAX_S = 72 * 3600
VALIDITY_DEFAULT_S = 48 * 3600
_UNIT_S = {"SECONDS": 1, "MINUTES": 60, "HOURS": 3600}


class TranslationError(ValueError):
    """A request Pushline cannot translate: the Infobip field and the rule it broke."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field, self.rule = field, rule


class _Strict(BaseModel):
    # A misspelt option must be a 400, never a notification sent without it.
    model_config = ConfigDict(extra="forbid")


def _upper(v: Any) -> Any:
    return v.upper() if isinstance(v, str) else v  # enum values match in any case (SEED-NOTES 23)


ShortText = Annotated[str, Field(min_length=1, max_length=255)]
UrlText = Annotated[str, Field(max_length=2048, pattern=r"^https?://\S+$")]


class NotificationOptions(_Strict):
    """`notificationOptions`, with the mirrored-push parameters; names as Infobip spells them."""

    vibrationEnabled: bool | None = None
    soundEnabled: bool | None = None
    soundName: Annotated[str, Field(min_length=1, max_length=256)] | None = None
    badge: Annotated[int, Field(ge=0, le=2**31 - 1)] | None = None
    contentUrl: UrlText | None = None
    category: ShortText | None = None
    inAppStyle: Literal["MODAL", "BANNER"] | None = None
    isSilent: bool | None = None
    title: Annotated[str, Field(min_length=1, max_length=1000)] | None = None
    webViewUrl: UrlText | None = None
    inboxTopic: ShortText | None = None
    showMirroredPush: bool | None = None
    mirroredPushStyle: Literal["MODAL", "BANNER"] | None = None
    mirroredPushExpirationPeriod: Annotated[int, Field(ge=1)] | None = None
    mirroredPushExpirationTimeUnit: Literal["MINUTES", "HOURS"] | None = None
    mirroredPushDismissTitle: ShortText | None = None
    mirroredPushOpenTitle: ShortText | None = None
    onTapButtonAction: Annotated[str, Field(min_length=1, max_length=2048)] | None = None

    @field_validator(
        "inAppStyle", "mirroredPushStyle", "mirroredPushExpirationTimeUnit", mode="before"
    )
    @classmethod
    def _enums_any_case(cls, v: Any) -> Any:
        return _upper(v)


class InfobipPush(_Strict):
    """The send request: `from` is the application code, the rest the push (SEED-NOTES 19)."""

    from_: Annotated[str, Field(alias="from", min_length=1, max_length=80)]
    destinations: Annotated[
        list[dict[str, Any]],
        Field(
            min_length=1,
            description="Each {type, address}: REGISTRATION + pushRegistrationId, "
            "EXTERNAL_USER_ID + externalUserId, PHONE_NUMBER + phoneNumber, EMAIL + email, "
            "or MULTIPLE + $and / $or lists of one-attribute conditions; any of them may set "
            "targetOnlyPrimaryDevices.",
        ),
    ]
    text: Annotated[str, Field(min_length=1, max_length=4000)]
    title: Annotated[str, Field(min_length=1, max_length=1000)] | None = None
    notificationOptions: NotificationOptions | None = None
    customPayload: dict[str, Any] | None = None
    targetOnlyPrimaryDevices: bool = False
    includeNotificationsDisabledDevices: bool = False
    validityPeriod: Annotated[int, Field(ge=1)] | None = None
    validityPeriodTimeUnit: Literal["SECONDS", "MINUTES", "HOURS"] | None = None

    @field_validator("validityPeriodTimeUnit", mode="before")
    @classmethod
    def _unit_any_case(cls, v: Any) -> Any:
        return _upper(v)


def parse_push(body: Any) -> InfobipPush:
    """The request body as a model; TranslationError names the first bad field."""
    if not isinstance(body, Mapping):
        raise TranslationError("body", "must be a JSON object")
    try:
        return InfobipPush.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = ".".join(str(p) for p in err["loc"]) or "body"
        rule = "unknown field" if err["type"] == "extra_forbidden" else err["msg"]
        raise TranslationError(field, rule) from None


def validity_seconds(period: int | None, unit: str | None) -> int:
    """validityPeriod in its unit (hours unless told) as the time to live in seconds."""
    if period is None:
        if unit is not None:
            raise TranslationError("validityPeriodTimeUnit", "needs validityPeriod")
        return VALIDITY_DEFAULT_S
    seconds = period * _UNIT_S[unit or "HOURS"]
    if not VALIDITY_MIN_S <= seconds <= min(VALIDITY_MAX_S, TTL_MAX_S):
        raise TranslationError(
            "validityPeriod", f"must be between 30 seconds and 72 hours (got {seconds} s)"
        )
    return seconds


def required_role(target: Mapping[str, Any]) -> str:
    """push_single for exactly one REGISTRATION destination (one device), else push_multiple.

    Reads the native target, where every spelling of the type is already normalised."""
    destinations = target.get("destinations") or []
    if len(destinations) == 1 and destinations[0].get("type") == "REGISTRATION":
        return "push_single"
    return "push_multiple"


#: Native payload paths that an Infobip field produced, so an error names the Infobip field.
_NATIVE_FIELDS = {
    "alert": "text",
    "sound": "notificationOptions.soundName",
    "image": "notificationOptions.contentUrl",
    "category": "notificationOptions.category",
    "web_view_url": "notificationOptions.webViewUrl",
    "inbox_topic": "notificationOptions.inboxTopic",
    "in_app": "notificationOptions.showMirroredPush",
    "data": "customPayload",
    "apns": "notificationOptions.badge",
    "fcm": "notificationOptions.vibrationEnabled",
}


def infobip_field(native: str) -> str:
    """The Infobip field behind a native error path (`payload.data` → `customPayload`)."""
    parts = native.split(".")
    if parts[0] == "target":
        return "destinations" if len(parts) < 3 else ".".join(["destinations", *parts[2:]])
    if parts[0] == "payload" and len(parts) > 1:
        return _NATIVE_FIELDS.get(parts[1], "body")
    return native


def to_native(push: InfobipPush) -> dict[str, Any]:
    """The native push body (`target` + `payload`) this request means.

    The top-level `title` and `notificationOptions.title` are one field: either, or both
    equal. `validityPeriod` is the time to live (48 h when absent, as Infobip does).
    """
    options = (
        push.notificationOptions.model_dump(exclude_none=True) if push.notificationOptions else {}
    )
    if push.title is not None:
        if options.get("title", push.title) != push.title:
            raise TranslationError(
                "title", "differs from notificationOptions.title: give one, or the same"
            )
        options["title"] = push.title
    try:
        target = DestinationsTarget.model_validate(
            {
                "type": "destinations",
                "destinations": push.destinations,
                "target_only_primary_devices": push.targetOnlyPrimaryDevices,
                "include_notifications_disabled_devices": push.includeNotificationsDisabledDevices,
            }
        )
    except ValidationError as exc:
        err = exc.errors()[0]
        loc = [str(p) for p in err["loc"]]
        where = ".".join(loc) if loc[:1] == ["destinations"] else "destinations"
        # The native filter's name is `filter`; an Infobip caller wrote `$and` / `$or`.
        rule = err["msg"].removeprefix("Value error, ").removeprefix("filter.")
        if err["type"] == "extra_forbidden":
            rule = "unknown field"
        raise TranslationError(where, rule) from None
    try:
        payload = infobip_payload(push.text, options, push.customPayload)
    except ValueError as exc:
        raise TranslationError("notificationOptions", str(exc)) from None
    payload["time_to_live"] = validity_seconds(push.validityPeriod, push.validityPeriodTimeUnit)
    return {"target": target.model_dump(), "payload": payload}


# --- statuses ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class Status:
    """Infobip's status object: a group (PENDING, UNDELIVERABLE, DELIVERED, EXPIRED, REJECTED)
    and a status within it, with Infobip's ids."""

    group_id: int
    group_name: str
    id: int
    name: str
    description: str

    def document(self) -> dict[str, Any]:
        return {
            "groupId": self.group_id,
            "groupName": self.group_name,
            "id": self.id,
            "name": self.name,
            "description": self.description,
        }


ACCEPTED = Status(1, "PENDING", 26, "PENDING_ACCEPTED", "Message accepted, pending for delivery.")
ENROUTE = Status(
    1, "PENDING", 7, "PENDING_ENROUTE", "Sent to APNs or FCM; the device has not reported it yet."
)
DELIVERED = Status(3, "DELIVERED", 5, "DELIVERED_TO_HANDSET", "Message delivered to the device.")
SEEN = Status(3, "DELIVERED", 5, "DELIVERED_TO_HANDSET", "Message delivered and seen.")
EXPIRED = Status(4, "EXPIRED", 15, "EXPIRED_EXPIRED", "The validity period ended before delivery.")
UNDELIVERABLE = Status(
    2, "UNDELIVERABLE", 9, "UNDELIVERABLE_NOT_DELIVERED", "The device's registration is not valid."
)
REJECTED_BY_CLOUD = Status(
    2, "UNDELIVERABLE", 4, "UNDELIVERABLE_REJECTED_OPERATOR", "APNs or FCM did not deliver it."
)
# Infobip has no status for a push its sender withdrew: REJECTED with an id of Pushline's own.
CANCELLED = Status(
    5, "REJECTED", 1500, "REJECTED_CANCELLED", "Cancelled by the sender before it was sent."
)
NO_DESTINATION = Status(
    5, "REJECTED", 14, "REJECTED_DESTINATION", "No active registration matched the destination."
)

REGISTRATION_CODES = frozenset({ResultCode.TOKEN_REJECTED, ResultCode.REGISTRATION_EXPIRED})
CLOUD_CODES = frozenset(
    {
        ResultCode.CONFIGURATION_EXPIRED,
        ResultCode.TOO_MANY_FOR_DEVICE,
        ResultCode.NOT_ACCEPTED,
        ResultCode.RECOVERABLE_IO,
        ResultCode.COMMUNICATION_FAILED,
        ResultCode.PROVIDER_UNREACHABLE,
        ResultCode.QUOTA_EXCEEDED,
    }
)
SEEN_STATUSES = frozenset({DeliveryStatus.CONSUMED, DeliveryStatus.CONFIRMED})
DELIVERED_STATUSES = SEEN_STATUSES | {DeliveryStatus.RECEIVED}


def is_expired(provider_message: str | None) -> bool:
    """The worker writes "expired: …" when the time to live ended before a send (deliver.py)."""
    return bool(provider_message) and str(provider_message).startswith("expired")


def status_of(status: str, code: int | None, provider_message: str | None) -> Status:
    """A Delivery's state as Infobip's status."""
    if status in SEEN_STATUSES:
        return SEEN
    if status == DeliveryStatus.RECEIVED:
        return DELIVERED
    if status == DeliveryStatus.SENT:
        return ENROUTE
    if status == DeliveryStatus.QUEUED:
        return ACCEPTED
    if status == DeliveryStatus.CANCELLED:
        return CANCELLED
    if is_expired(provider_message):
        return EXPIRED
    if code in REGISTRATION_CODES or code == ResultCode.TOKEN_MISSING:
        return UNDELIVERABLE
    return REJECTED_BY_CLOUD


#: Infobip's error groups: 0 OK, 1 HANDSET_ERRORS, 2 USER_ERRORS, 3 OPERATOR_ERRORS.
_USER_CODES = frozenset(
    {ResultCode.INVALID_DATA, ResultCode.TARGET_NOT_FOUND, ResultCode.PAYLOAD_TOO_LARGE}
)


def error_of(status: str, code: int | None, meaning: str | None) -> dict[str, Any]:
    """Infobip's `error` object; `id` is Pushline's result code, `name` its name."""
    if status != DeliveryStatus.ERROR or code is None:
        return {
            "groupId": 0,
            "groupName": "OK",
            "id": 0,
            "name": "NO_ERROR",
            "description": "No Error",
            "permanent": False,
        }
    if code in REGISTRATION_CODES or code == ResultCode.TOKEN_MISSING:
        group = (1, "HANDSET_ERRORS")
    elif code in _USER_CODES:
        group = (2, "USER_ERRORS")
    else:
        group = (3, "OPERATOR_ERRORS")
    try:
        name = ResultCode(code).name
    except ValueError:
        name = f"CODE_{code}"
    return {
        "groupId": group[0],
        "groupName": group[1],
        "id": code,
        "name": name,
        "description": meaning or name,
        "permanent": True,
    }


def statistics(counts: Iterable[tuple[str, int | None, bool, int]]) -> dict[str, Any]:
    """The bulk statistics document from Delivery counts grouped by (status, code, expired).

    SEED-NOTES 24: totalSent = every targeted device; delivered = RECEIVED or later; seen =
    CONSUMED or later; errors: registration = codes 6 and 7, expired = the time to live ended
    before a send, or a sent message was not reported delivered before it ended; cloud =
    provider failures (4, 8, 10-14) that did not expire; rate = delivered / totalSent as
    0…1 (0 when nothing was sent).
    """
    total = delivered = seen = registration = expired = cloud = cancelled = 0
    for status, code, was_expired, n in counts:
        total += n
        if status == DeliveryStatus.CANCELLED:
            cancelled += n
        if status in DELIVERED_STATUSES:
            delivered += n
        if status in SEEN_STATUSES:
            seen += n
        if was_expired and status in (DeliveryStatus.ERROR, DeliveryStatus.SENT):
            expired += n  # ended before a send, or sent and never reported delivered in time
            continue
        if status != DeliveryStatus.ERROR:
            continue
        elif code in REGISTRATION_CODES:
            registration += n
        elif code in CLOUD_CODES:
            cloud += n
    document: dict[str, Any] = {
        "totalSent": total,
        "delivered": delivered,
        "seen": seen,
        "errors": {"registration": registration, "expired": expired, "cloud": cloud},
        "delivery": {"rate": round(delivered / total, 4) if total else 0.0},
    }
    if cancelled:  # Pushline's own key, only when the sender withdrew part of the bulk
        document["cancelled"] = cancelled
    return document


def recipient(registration_id: str, attributes: Mapping[str, str | None]) -> dict[str, str]:
    """Whom one per-device message went to: the push registration id and the person's
    addresses the registration carries."""
    to = {"pushRegistrationId": registration_id}
    for name in ("externalUserId", "phoneNumber", "email"):
        value = attributes.get(name)
        if value:
            to[name] = value
    return to


def destination_echo(destination: Mapping[str, Any]) -> dict[str, Any]:
    """A destination as the caller wrote it, for per-destination answers."""
    return {k: v for k, v in destination.items() if k != "type"} | {
        "type": str(destination.get("type", ""))
    }


# --- requests from devices (Mobile Messaging SDK style) ---------------------------------------


class DeliveryReports(_Strict):
    """The SDK's delivery reports: these message ids reached the device (RECEIVED)."""

    dlrIds: Annotated[
        list[Annotated[str, Field(min_length=1, max_length=64)]],
        Field(min_length=1, max_length=1000),
    ]


class SeenMessage(_Strict):
    messageId: Annotated[str, Field(min_length=1, max_length=64)]
    # Milliseconds between the moment it was seen and this report (the SDK batches reports).
    timestampDelta: Annotated[int, Field(ge=0, le=30 * 86_400_000)] = 0
    # True: `messageId` is an inbox message of `externalUserId` (marked seen in the inbox).
    inbox: bool = False


class SeenReports(_Strict):
    """The SDK's seen reports: the user saw these messages (CONSUMED), or, with `inbox`,
    these messages of `externalUserId`'s inbox."""

    externalUserId: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    messages: Annotated[list[SeenMessage], Field(min_length=1, max_length=1000)]


# --- the inbox --------------------------------------------------------------------------------


class InboxTopicIn(_Strict):
    """A new inbox topic: the name is kept exactly as written (case sensitive)."""

    name: Annotated[str, Field(min_length=1, max_length=255, pattern=r"^\S(.*\S)?$")]


class InboxTopicOut(BaseModel):
    name: str
    createdAt: str


class InboxTopicsOut(BaseModel):
    topics: list[InboxTopicOut]


class InboxMessageOut(BaseModel):
    messageId: str  # the inbox message's own id (one per person), for seen reports
    bulkId: str
    topic: str
    title: str | None = None
    body: str | None = None
    customPayload: dict[str, Any] | None = None
    sendDateTime: int  # epoch milliseconds
    seen: bool
    seenDate: int | None = None  # epoch milliseconds


class InboxOut(BaseModel):
    countTotal: int
    countUnread: int
    messages: list[InboxMessageOut]


# --- answers (for the OpenAPI document; the routes build them from the functions above) -------


class StatusOut(BaseModel):
    groupId: int
    groupName: str
    id: int
    name: str
    description: str


class ErrorOut(BaseModel):
    groupId: int
    groupName: str
    id: int
    name: str
    description: str
    permanent: bool


class SentMessage(BaseModel):
    to: dict[str, Any]
    messageId: str | None = None  # a Delivery id; absent while the devices are not known yet
    status: StatusOut


class SendAnswer(BaseModel):
    bulkId: str
    messages: list[SentMessage]


class StatisticsErrors(BaseModel):
    registration: int
    expired: int
    cloud: int


class DeliveryRate(BaseModel):
    rate: float


class StatisticsOut(BaseModel):
    totalSent: int
    delivered: int
    seen: int
    errors: StatisticsErrors
    delivery: DeliveryRate


class Report(BaseModel):
    bulkId: str
    messageId: str
    to: dict[str, Any]
    sentAt: str | None = None
    doneAt: str | None = None
    seenAt: str | None = None
    messageCount: int = 1
    status: StatusOut
    error: ErrorOut


class ReportsOut(BaseModel):
    results: list[Report]
    nextCursor: str | None = None  # Pushline: pass as `cursor` for the next page


class EngagementResult(BaseModel):
    messageId: str
    status: StatusOut | None = None  # a Delivery's status; absent for an inbox message
    inbox: bool | None = None  # true: an inbox message marked seen


class EngagementAnswer(BaseModel):
    results: list[EngagementResult]


class ServiceException(BaseModel):
    messageId: str  # BAD_REQUEST, UNAUTHORIZED, NOT_FOUND, UNSUPPORTED_MEDIA_TYPE…
    text: str
    validationErrors: dict[str, list[str]] | None = None  # field → the rules it broke


class RequestErrorBody(BaseModel):
    serviceException: ServiceException


class InfobipError(BaseModel):
    """Every Infobip error: `{"requestError": {"serviceException": {…}}}`."""

    requestError: RequestErrorBody
