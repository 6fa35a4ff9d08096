"""Request and response models of the native API (`/v1`), shared with the Python client."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Any, Literal

from pydantic import AfterValidator, BaseModel, ConfigDict, Field

from schemas.localtime import HHMM, check_device_zone, check_zone

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
from schemas.targets import MAX_TOPICS
from schemas.targets import TARGET_ROLE as TARGET_ROLE
from schemas.targets import ApplicationTarget as ApplicationTarget
from schemas.targets import DeviceTarget as DeviceTarget
from schemas.targets import Target as Target
from schemas.targets import UsersTarget as UsersTarget


class Strict(BaseModel):
    # Unknown fields are errors: a typo must not silently drop part of a notification.
    model_config = ConfigDict(extra="forbid")


#: "09:00": a wall-clock time, read in each device's time zone.
Clock = Annotated[str, Field(pattern=HHMM, examples=["09:00"])]
#: An IANA time zone name ("Europe/Berlin"), checked against the zone database.
TimeZone = Annotated[str, Field(max_length=64), AfterValidator(check_zone)]
DeviceZone = Annotated[str, Field(max_length=64), AfterValidator(check_device_zone)]


class ScheduleSpec(Strict):
    """When to publish. Times are ISO 8601 or, as Backendless sends them, epoch milliseconds."""

    publish_at: datetime | int | None = None
    repeat_every: Annotated[int, Field(ge=1)] | None = None  # seconds
    repeat_expires_at: datetime | int | None = None
    cron: Annotated[str, Field(min_length=1, max_length=120)] | None = None
    timezone: Annotated[str, Field(max_length=64)] = "UTC"
    local_time: Clock | None = Field(
        None,
        description=(
            "Deliver each run at this time in each device's own time zone (its "
            "registration's time_zone, else the app's). The run's local date is local_date, "
            "else the run's date in `timezone`; a run spans up to a day."
        ),
    )
    local_date: date | None = Field(
        None,
        description=(
            "The local date of a once schedule's run (needs local_time). Without publish_at "
            "the run starts when the first zone on earth reaches local_time that day."
        ),
    )
    local_time_missed: Literal["next_day", "skip"] = Field(
        "next_day",
        description=(
            "Devices whose local_time had passed when the run started: the next day's "
            "local_time (next_day) or nothing (skip)."
        ),
    )


class QuietHours(Strict):
    """Local hours in which campaign-lane deliveries wait (held QUEUED, sent when they end);
    priority-lane pushes are never held. start after end wraps midnight (22:00-08:00)."""

    start: Clock
    end: Clock


#: A label names a campaign's kind ("spring-sale", "onboarding:day1"): short, no spaces.
Label = Annotated[
    str, Field(min_length=1, max_length=64, pattern=r"^[A-Za-z0-9][A-Za-z0-9._:/-]*$")
]
MAX_LABELS = 20
MAX_DELIVER_OVER_S = 7 * 86_400


class PushRequest(Strict):
    target: Target
    payload: Payload
    schedule: ScheduleSpec | None = None
    # The same key for the same app within 24 h returns the first Message and sends nothing.
    idempotency_key: Annotated[str, Field(min_length=1, max_length=255)] | None = None
    # To find and follow a campaign: GET /v1/messages?label=…
    name: Annotated[str, Field(min_length=1, max_length=200)] | None = None
    labels: Annotated[list[Label], Field(max_length=MAX_LABELS)] | None = None
    # Throttle a campaign: spread it evenly over this many seconds, and/or send at most this
    # many a minute (the app's provider rates still apply; the priority lane never is).
    deliver_over: Annotated[int, Field(ge=1, le=MAX_DELIVER_OVER_S)] | None = None
    max_per_minute: Annotated[int, Field(ge=1, le=10_000_000)] | None = None
    quiet_hours: QuietHours | None = Field(
        None,
        description=(
            "Campaign lane only: deliveries falling inside these hours, local to each device "
            "(its time_zone, else the app's), wait QUEUED until they end. Without it the "
            "app's quiet hours apply. A 400 on a priority-lane push, which is never held."
        ),
    )

    def campaign(self) -> dict[str, Any]:
        """The campaign options as stored on a Schedule and copied onto each run's Message."""
        return self.model_dump(mode="json", include=CAMPAIGN_FIELDS, exclude_none=True)


#: The PushRequest fields every Message of a campaign carries (see `PushRequest.campaign`).
CAMPAIGN_FIELDS = {"name", "labels", "deliver_over", "max_per_minute", "quiet_hours"}
THROTTLE_FIELDS = ("deliver_over", "max_per_minute")


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
    local_time: str | None = None
    local_date: date | None = None
    local_time_missed: str | None = None
    next_run_at: datetime | None
    runs: int
    last_run_at: datetime | None
    created_at: datetime
    message_ids: list[str] = []


class SchedulePage(BaseModel):
    items: list[ScheduleOut]
    next_cursor: str | None


class LocalRelease(BaseModel):
    """One group of a local-time run: the devices whose zones reach the run's local time at
    `release_at` (None: skipped, their time had passed). state: waiting, released (due),
    fanning (being fanned out), done, skipped or cancelled (with the Message). `zones` as
    registrations name them (null: none)."""

    release_at: datetime | None
    devices: int  # when the run started
    state: str
    zones: list[str | None]


class MessageStatus(BaseModel):
    id: str
    app_id: str
    name: str | None = None
    labels: list[str] = []
    state: str
    code: int | None
    detail: str | None
    total: int
    by_status: dict[str, int]
    by_code: dict[str, int]
    created_at: datetime
    dispatched_at: datetime | None
    completed_at: datetime | None
    local_time: dict[str, str] | None = Field(
        None,
        description='A local-time run: {"at": "09:00", "day": "2030-06-01", "missed": …}.',
    )
    releases: list[LocalRelease] = Field(
        [],
        description=(
            "A local-time run's release groups, soonest first; the Message stays accepted "
            "until the last is released."
        ),
    )


class Attempt(BaseModel):
    """One attempt of a Delivery: when, what the provider answered, the result code, how
    long the provider took and which worker process sent it."""

    at: datetime
    code: int | None  # None: cancelled before it was sent
    answer: str
    ms: float | None = None
    worker: str | None = None


class MessageSummary(BaseModel):
    """One Message in a listing (no Delivery counts: those are per Message, see its status)."""

    id: str
    name: str | None
    labels: list[str]
    state: str
    code: int | None
    total: int
    lane: str
    target_type: str
    schedule_id: str | None
    created_at: datetime
    dispatched_at: datetime | None
    completed_at: datetime | None


class MessagePage(BaseModel):
    items: list[MessageSummary]
    next_cursor: str | None


class TimelineMinute(BaseModel):
    minute: datetime  # the minute's start, UTC
    sent: int
    failed: int
    cancelled: int


class MessageTimeline(BaseModel):
    """A Message's outcomes per minute: sent by when they were sent, failed and cancelled by
    when that was recorded; minutes with none in between are present with zeros."""

    message_id: str
    minutes: list[TimelineMinute]


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
    next_attempt_at: datetime | None = Field(
        None,
        description=(
            "A QUEUED Delivery is not sent before this: a retry's backoff, a throttle, or "
            'quiet hours (then provider_message says "held: quiet hours until …").'
        ),
    )


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


class WebPushKeys(Strict):
    """A W3C push subscription's keys, as `PushSubscription.toJSON()` gives them."""

    p256dh: Annotated[str, Field(min_length=1, max_length=100)]
    auth: Annotated[str, Field(min_length=1, max_length=40)]


class RegistrationIn(Strict):
    """One installation of the app for one user on one device (or browser). Every field is
    optional, but a registration without a token names its provider or platform (pushes to
    it end with code 5, "push token missing", until a token is registered). A Web Push
    subscription (provider `webpush`, platform `web`) gives its endpoint as the token and
    its `keys`. A Huawei device without Google services registers its Push Kit token with
    provider `hms` (platform `android`)."""

    token: Annotated[str, Field(min_length=1, max_length=4096)] | None = None
    provider: Literal["apns", "fcm", "webpush", "hms"] | None = None
    platform: Literal["ios", "ipados", "android", "web"] | None = None
    keys: WebPushKeys | None = None  # Web Push only: the subscription's p256dh and auth
    device_id: Short | None = None  # may be an IMEI or a phone number (Microbizz)
    username: Short | None = None
    global_user_id: Short | None = None
    external_user_id: Short | None = None
    phone_number: Annotated[str, Field(min_length=3, max_length=32)] | None = None
    email: (
        Annotated[str, Field(min_length=3, max_length=320, pattern=r"^[^@\s]+@[^@\s]+$")] | None
    ) = None
    push_group: Short | None = None
    # Lists are bounded (as targets are): each entry is a row written with the registration.
    topics: Annotated[list[Short], Field(max_length=MAX_TOPICS)] | None = None  # replaces them
    capabilities: Annotated[list[Capability], Field(max_length=MAX_TOPICS)] | None = None
    locale: Annotated[str, Field(max_length=64)] | None = None  # SAP userLocale
    preferred_languages: (
        Annotated[list[Annotated[str, Field(max_length=64)]], Field(max_length=100)] | None
    ) = None
    # The device's zone for local_time schedules and quiet hours: an IANA name (SAP's own
    # example says "MESZ": kept, read as no zone, so the app's default applies).
    time_zone: DeviceZone | None = None
    form_factor: Annotated[str, Field(max_length=32)] | None = None
    device_model: Short | None = None
    device_manufacturer: Short | None = None
    os_version: Version | None = None
    sdk_version: Version | None = None
    app_version: Version | None = None
    device_secure: bool | None = None
    notifications_enabled: bool | None = None
    primary_device: bool | None = None
    custom_attributes: (
        Annotated[dict[Short, str | int | float | bool | None], Field(max_length=MAX_TOPICS)]
        | None
    ) = None


class RegistrationOut(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: str
    app_id: str
    provider: str
    token: str | None  # None: registered from events before the app sent its token
    platform: str
    webpush_p256dh: str | None = None
    webpush_auth: str | None = None
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
    topics: Annotated[list[Short], Field(min_length=1, max_length=MAX_TOPICS)]


class RegistrationPage(BaseModel):
    items: list[RegistrationOut]
    next_cursor: str | None


class WebPushPublicKey(BaseModel):
    """What a web front end needs to subscribe: `applicationServerKey` for
    `pushManager.subscribe()` (base64url of the app's VAPID public key)."""

    app_id: str
    public_key: str


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


class AudienceRequest(Strict):
    """`POST /v1/audience`: any target the push route accepts, nothing sent."""

    target: Target


class AudienceGroup(BaseModel):
    provider: str
    platform: str
    devices: int


class AudienceOut(BaseModel):
    """How many active registrations a target reaches now, as the fan-out would resolve it."""

    total: int
    by_provider: dict[str, int]
    by_platform: dict[str, int]
    groups: list[AudienceGroup]  # every (provider, platform) pair with its count
