"""CM.com push events: the event document (inbound from apps, outbound to webhooks), the pure
mappings onto Registration and Delivery, and the webhook signature.

One document shape serves both directions (SEED-NOTES 25): installation id and AppKey are
GUIDs written as 32 hex digits (accepted with or without hyphens), `reference` (a Delivery
id) keeps its hyphens, `timeUtc` is written without a zone.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Annotated, Any, Literal, Protocol

from pydantic import BaseModel, BeforeValidator, ConfigDict, Field, ValidationError

from schemas.codes import CODE_MEANINGS, DeliveryStatus

CHANNEL = "MobilePush"

# Inbound (the seed's six) and the two Pushline adds for its own delivery outcomes.
CLIENT_INSTALLED = "ClientInstalled"
CLIENT_UPDATED = "ClientUpdated"
CLIENT_UNREGISTERED = "ClientUnregistered"
MESSAGE_OPENED = "MessageOpened"
MESSAGE_DISMISSED = "MessageDismissed"
MESSAGE_DELETE = "MessageDelete"
MESSAGE_SENT = "MessageSent"  # outbound only: the provider accepted the notification (code 0)
MESSAGE_FAILED = "MessageFailed"  # outbound only: final error, custom.code says why

LIFECYCLE_TYPES = (CLIENT_INSTALLED, CLIENT_UPDATED, CLIENT_UNREGISTERED)
ENGAGEMENT_TYPES = (MESSAGE_OPENED, MESSAGE_DISMISSED, MESSAGE_DELETE)
INBOUND_TYPES = LIFECYCLE_TYPES + ENGAGEMENT_TYPES
OUTBOUND_TYPES = INBOUND_TYPES + (MESSAGE_SENT, MESSAGE_FAILED)

#: SEED-NOTES 27: what an engagement event does to the Delivery (None: recorded, no status).
ENGAGEMENT_STATUS: dict[str, DeliveryStatus | None] = {
    MESSAGE_OPENED: DeliveryStatus.CONSUMED,
    MESSAGE_DISMISSED: DeliveryStatus.RECEIVED,
    MESSAGE_DELETE: None,
}

# deviceOs as the seed spells it → (provider, platform). Matched case-insensitively on input.
DEVICE_OS: dict[str, tuple[str, str]] = {
    "Android": ("fcm", "android"),
    "iOs": ("apns", "ios"),
    "iPadOS": ("apns", "ipados"),
}
_DEVICE_OS_BY_LOWER = {k.lower(): k for k in DEVICE_OS}
_OS_BY_PLATFORM = {platform: name for name, (_, platform) in DEVICE_OS.items()}

# SEED-NOTES 26: only NotAuthorized turns notifications off.
PUSH_AUTHORIZATION: dict[str, bool] = {
    "Authorized": True,
    "Provisional": True,
    "NotAuthorized": False,
}

_GUID = re.compile(
    r"^(?:[0-9a-fA-F]{32}|[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12})$"
)


# --- GUIDs ------------------------------------------------------------------------------------


def parse_guid(value: object) -> uuid.UUID:
    """A GUID with or without hyphens (CM writes both); anything else is a ValueError."""
    if not isinstance(value, str) or not _GUID.match(value.strip()):
        raise ValueError("a GUID: 32 hex digits, with or without hyphens")
    return uuid.UUID(value.strip())


def hex32(value: str | uuid.UUID) -> str:
    """CM's outbound form of an id: 32 lower-case hex digits. A non-GUID id goes as it is."""
    try:
        return (value if isinstance(value, uuid.UUID) else parse_guid(value)).hex
    except ValueError:
        return str(value)


def guid_forms(value: uuid.UUID) -> tuple[str, str]:
    """Both spellings a stored id may have (32 hex, hyphenated), for lookups."""
    return value.hex, str(value)


# --- the document -----------------------------------------------------------------------------


def _guid(value: object) -> str:
    return parse_guid(value).hex


def _device_os(value: object) -> str:
    if not isinstance(value, str) or value.lower() not in _DEVICE_OS_BY_LOWER:
        raise ValueError(f"one of {', '.join(DEVICE_OS)}")
    return _DEVICE_OS_BY_LOWER[value.lower()]


def _channel(value: object) -> str:
    if not isinstance(value, str) or value.lower() != CHANNEL.lower():
        raise ValueError(f"must be {CHANNEL}: push events only")
    return CHANNEL


def _time_utc(value: object) -> object:
    # CM writes no zone: the time is UTC. A zone, when given, is honoured.
    if isinstance(value, str):
        try:
            parsed = datetime.fromisoformat(value.strip().replace("Z", "+00:00"))
        except ValueError:
            raise ValueError("an ISO 8601 UTC time such as 2022-06-01T17:08:45") from None
        return parsed.replace(tzinfo=UTC) if parsed.tzinfo is None else parsed.astimezone(UTC)
    raise ValueError("an ISO 8601 UTC time such as 2022-06-01T17:08:45")


Guid = Annotated[str, BeforeValidator(_guid)]
Text = Annotated[str, Field(max_length=255)]
Version = Annotated[str, Field(max_length=64)]


class CmNumber(BaseModel):
    model_config = ConfigDict(extra="ignore")

    number: Guid


class CmProfile(BaseModel):
    """The profile data of ClientInstalled / ClientUpdated / ClientUnregistered (`custom`).

    `pushToken` is Pushline's addition: CM's documents carry no token, so an app that wants
    its installations reached sends the APNs / FCM token here.
    """

    model_config = ConfigDict(extra="ignore")

    clientId: Text | None = None
    clientVersion: Version | None = None
    msisdn: Annotated[str, Field(max_length=32)] | None = None
    deviceOs: Annotated[str, BeforeValidator(_device_os)] | None = None
    deviceOsVersion: Version | None = None
    deviceModel: Text | None = None
    pushAuthorization: Literal["Authorized", "NotAuthorized", "Provisional"] | None = None
    preferredLanguages: list[Annotated[str, Field(min_length=1, max_length=64)]] | None = None
    pushToken: Annotated[str, Field(min_length=1, max_length=4096)] | None = None


class CmEventBody(BaseModel):
    model_config = ConfigDict(extra="ignore")

    type: Literal[
        "ClientInstalled",
        "ClientUpdated",
        "ClientUnregistered",
        "MessageOpened",
        "MessageDismissed",
        "MessageDelete",
    ]
    custom: CmProfile | None = None
    reference: Annotated[str, BeforeValidator(lambda v: str(parse_guid(v)))] | None = None


class CmEvent(BaseModel):
    """One inbound event document, normalised: GUIDs as 32 hex, reference hyphenated."""

    model_config = ConfigDict(extra="ignore", populate_by_name=True)

    from_: CmNumber = Field(alias="from")
    to: CmNumber
    event: CmEventBody
    timeUtc: Annotated[datetime, BeforeValidator(_time_utc)] | None = None
    channel: Annotated[str, BeforeValidator(_channel)] | None = None

    @property
    def installation_id(self) -> str:
        return self.from_.number

    @property
    def profile(self) -> CmProfile:
        return self.event.custom or CmProfile()


class DocumentError(ValueError):
    """A malformed event document: `field` is the dotted path in CM's spelling."""

    def __init__(self, field: str, rule: str) -> None:
        super().__init__(f"{field}: {rule}")
        self.field = field
        self.rule = rule


def parse_event(body: object) -> CmEvent:
    """Validate one event document; raise DocumentError naming the first field that failed."""
    if not isinstance(body, Mapping):
        raise DocumentError("body", "one CM event document (a JSON object)")
    try:
        doc = CmEvent.model_validate(body)
    except ValidationError as exc:
        err = exc.errors()[0]
        path = ".".join(str(p) for p in err["loc"]) or "body"
        rule = str(err["msg"]).removeprefix("Value error, ")
        raise DocumentError(path, "required" if err["type"] == "missing" else rule) from None
    if doc.event.type in ENGAGEMENT_TYPES and doc.event.reference is None:
        raise DocumentError("event.reference", f"required for {doc.event.type}: the Delivery id")
    return doc


# --- profile → registration -------------------------------------------------------------------


@dataclass(frozen=True)
class InstallationFields:
    """What a ClientInstalled / ClientUpdated profile sets on the Registration.

    `values` holds Registration attributes to set (absent: keep what is stored).
    """

    provider: str | None = None
    platform: str | None = None
    phone_number: str | None = None  # as sent; the registration code normalises it
    token: str | None = None
    client_id: str | None = None  # the app's identifier, kept for later outbound documents
    values: dict[str, Any] = field(default_factory=dict)


def installation_fields(profile: CmProfile) -> InstallationFields:
    provider, platform = DEVICE_OS[profile.deviceOs] if profile.deviceOs else (None, None)
    languages = profile.preferredLanguages
    enabled = PUSH_AUTHORIZATION[profile.pushAuthorization] if profile.pushAuthorization else None
    values: dict[str, Any] = {
        "app_version": profile.clientVersion,
        "os_version": profile.deviceOsVersion,
        "device_model": profile.deviceModel,
        "notifications_enabled": enabled,
        "preferred_languages": list(languages) if languages else None,
        # SEED-NOTES 26: the first preferred language is the locale.
        "locale": languages[0] if languages else None,
    }
    return InstallationFields(
        provider=provider,
        platform=platform,
        phone_number=profile.msisdn or None,
        token=profile.pushToken,
        client_id=profile.clientId or None,
        # CM writes unknown values as null or "": both keep what is stored.
        values={k: v for k, v in values.items() if v is not None and v != ""},
    )


# --- outbound documents -----------------------------------------------------------------------


def time_utc(at: datetime) -> str:
    """CM's timeUtc: UTC, seconds, no zone."""
    if at.tzinfo is not None:
        at = at.astimezone(UTC)
    return at.replace(tzinfo=None, microsecond=0).isoformat()


def event_document(
    event_type: str,
    installation_id: str,
    app_id: str,
    at: datetime,
    *,
    reference: str | None = None,
    custom: Mapping[str, Any] | None = None,
) -> dict[str, Any]:
    event: dict[str, Any] = {"type": event_type}
    if custom is not None:
        event["custom"] = dict(custom)
    if reference is not None:
        event["reference"] = reference
    return {
        "from": {"number": hex32(installation_id)},
        "to": {"number": hex32(app_id)},
        "event": event,
        "timeUtc": time_utc(at),
        "channel": CHANNEL,
    }


@dataclass(frozen=True)
class InstallationView:
    """The Registration attributes an outbound lifecycle event shows."""

    registration_id: str
    device_id: str | None
    platform: str | None
    app_version: str | None
    os_version: str | None
    device_model: str | None
    phone_number: str | None
    notifications_enabled: bool
    preferred_languages: list[str] | None
    client_id: str | None = None


class RegistrationLike(Protocol):
    """A Registration row or a RegistrationOut: what an installation event shows of it."""

    id: str
    device_id: str | None
    platform: str
    app_version: str | None
    os_version: str | None
    device_model: str | None
    phone_number: str | None
    notifications_enabled: bool
    preferred_languages: list[str] | None


def view_of(reg: RegistrationLike) -> InstallationView:
    return InstallationView(
        registration_id=reg.id,
        device_id=reg.device_id,
        platform=reg.platform,
        app_version=reg.app_version,
        os_version=reg.os_version,
        device_model=reg.device_model,
        phone_number=reg.phone_number,
        notifications_enabled=reg.notifications_enabled,
        preferred_languages=reg.preferred_languages,
        # A Registration row keeps CM's clientId; the native API's view has none.
        client_id=getattr(reg, "client_id", None),
    )


def installation_id_of(registration_id: str, device_id: str | None) -> str:
    """The `from.number` of an installation: its device id, else its registration id."""
    return hex32(device_id or registration_id)


def msisdn(phone_digits: str | None) -> str | None:
    # Stored as international digits; CM writes the 00 prefix (its example: 0031612345678).
    return f"00{phone_digits}" if phone_digits else None


def lifecycle_document(
    event_type: str,
    reg: InstallationView,
    app_id: str,
    at: datetime,
    client_id: str | None = None,
) -> dict[str, Any]:
    """ClientInstalled / ClientUpdated with the full profile; ClientUnregistered with ids only.
    Exactly the keys the seed shows for each; `clientId` is the one the installation's
    events last gave (`client_id` overrides it), null when none did."""
    client_id = client_id or reg.client_id
    custom: dict[str, Any] = {"clientId": client_id, "msisdn": msisdn(reg.phone_number)}
    if event_type != CLIENT_UNREGISTERED:
        authorised = "Authorized" if reg.notifications_enabled else "NotAuthorized"
        custom = {
            "clientId": client_id,
            "clientVersion": reg.app_version,
            "msisdn": msisdn(reg.phone_number),
            "deviceOs": _OS_BY_PLATFORM.get(reg.platform or ""),
            "deviceOsVersion": reg.os_version,
            "deviceModel": reg.device_model,
            "pushAuthorization": authorised,
            "preferredLanguages": list(reg.preferred_languages or []),
        }
    return event_document(
        event_type,
        installation_id_of(reg.registration_id, reg.device_id),
        app_id,
        at,
        custom=custom,
    )


def retired_document(
    installation_id: str,
    app_id: str,
    phone_digits: str | None,
    client_id: str | None,
    at: datetime,
) -> dict[str, Any]:
    """ClientUnregistered for an installation the provider retired (code 6 or 7): the app is
    gone from the device as far as Pushline can tell. The seed's keys only (`clientId`,
    `msisdn`): why is told by the MessageFailed of the same delivery, sent with it."""
    custom = {"clientId": client_id, "msisdn": msisdn(phone_digits)}
    return event_document(CLIENT_UNREGISTERED, installation_id, app_id, at, custom=custom)


def engagement_document(
    event_type: str, installation_id: str, app_id: str, delivery_id: str, at: datetime
) -> dict[str, Any]:
    return event_document(event_type, installation_id, app_id, at, reference=delivery_id)


def outcome_type(status: str) -> str:
    return MESSAGE_SENT if status == DeliveryStatus.SENT else MESSAGE_FAILED


def outcome_document(
    *,
    delivery_id: str,
    message_id: str,
    installation_id: str,
    app_id: str,
    status: str,
    code: int,
    message: str | None,
    at: datetime,
) -> dict[str, Any]:
    """MessageSent (code 0) or MessageFailed with the result code and its meaning."""
    custom = {
        "code": code,
        "message": message or CODE_MEANINGS.get(code, ""),
        "messageId": message_id,
    }
    return event_document(
        outcome_type(status), installation_id, app_id, at, reference=delivery_id, custom=custom
    )


# --- subscriptions ----------------------------------------------------------------------------


@dataclass(frozen=True)
class Subscription:
    webhook_id: str
    events: str  # the stored filter


def parse_event_filter(events: Iterable[str] | None) -> str:
    """The stored filter: '*' for every event (also when none is given), else the sorted
    comma-separated types. An empty list would subscribe to nothing: refused."""
    if events is None:
        return "*"
    chosen = list(dict.fromkeys(events))
    if not chosen:
        raise DocumentError("events", "at least one event type, or * for all")
    if "*" in chosen:
        return "*"
    unknown = [e for e in chosen if e not in OUTBOUND_TYPES]
    if unknown:
        raise DocumentError(
            "events", f"unknown event type {unknown[0]!r}: one of * or {', '.join(OUTBOUND_TYPES)}"
        )
    return ",".join(sorted(chosen))


def wants(event_filter: str, event_type: str) -> bool:
    return event_filter == "*" or event_type in event_filter.split(",")


def select_for(event_filter: str, documents: Iterable[Mapping[str, Any]]) -> list[dict[str, Any]]:
    return [dict(d) for d in documents if wants(event_filter, str(d["event"]["type"]))]


def batches(documents: list[dict[str, Any]], size: int) -> list[list[dict[str, Any]]]:
    return [documents[i : i + size] for i in range(0, len(documents), max(1, size))]


def plan_posts(
    subs: Iterable[Subscription], documents: Sequence[Mapping[str, Any]], batch_size: int
) -> list[tuple[str, list[dict[str, Any]]]]:
    """(webhook id, batch) for every POST the documents call for: each subscription gets the
    documents its filter wants, `batch_size` to a request, nothing when it wants none."""
    return [
        (sub.webhook_id, batch)
        for sub in subs
        for batch in batches(select_for(sub.events, documents), batch_size)
    ]


# --- signing ----------------------------------------------------------------------------------

SIGNATURE_HEADER = "X-Pushline-Signature"
TIMESTAMP_HEADER = "X-Pushline-Timestamp"
BATCH_HEADER = "X-Pushline-Batch"  # the same on every attempt: receivers may deduplicate


def signature(secret: str, timestamp: int, body: bytes) -> str:
    """`v1=` + hex HMAC-SHA256 of `<timestamp>.<raw body>` keyed with the webhook's secret."""
    mac = hmac.new(secret.encode(), f"{timestamp}.".encode() + body, hashlib.sha256)
    return f"v1={mac.hexdigest()}"


def verify(
    secret: str, timestamp: str, body: bytes, sig: str, *, now: float, tolerance_s: float = 300
) -> bool:
    """What a receiver does: recompute, compare in constant time, reject stale timestamps."""
    try:
        ts = int(timestamp)
    except ValueError:
        return False
    if abs(now - ts) > tolerance_s:
        return False
    return hmac.compare_digest(signature(secret, ts, body), sig)


# --- backoff ----------------------------------------------------------------------------------


def retry_delay_s(attempt: int, base_s: float, cap_s: float) -> float:
    """Delay before attempt `attempt + 1` after `attempt` failed: base × 2^(attempt-1), capped."""
    return min(cap_s, base_s * (2 ** max(0, attempt - 1)))


# --- a tiny TTL cache both sides use for "which webhooks does this app have" ----------------


class SubscriptionCache:
    """app id → its active subscriptions, remembered `ttl_s` seconds (empty lists too), so
    the delivery path asks SQL at most once per app every few seconds."""

    def __init__(
        self,
        load: Callable[[str], list[Subscription]],
        ttl_s: float,
        clock: Callable[[], float],
    ) -> None:
        self._load = load
        self._ttl_s = ttl_s
        self._clock = clock
        self._entries: dict[str, tuple[float, list[Subscription]]] = {}

    def get(self, app_id: str) -> list[Subscription]:
        now = self._clock()
        hit = self._entries.get(app_id)
        if hit is None or hit[0] < now:
            hit = (now + self._ttl_s, self._load(app_id))
            self._entries[app_id] = hit
        return hit[1]

    def forget(self, app_id: str) -> None:
        self._entries.pop(app_id, None)
