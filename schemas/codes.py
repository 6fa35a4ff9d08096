"""Delivery states and the SAP result codes (DESIGN.md §3)."""

from __future__ import annotations

from enum import IntEnum, StrEnum


class DeliveryStatus(StrEnum):
    QUEUED = "QUEUED"
    SENT = "SENT"
    ERROR = "ERROR"
    RECEIVED = "RECEIVED"
    CONSUMED = "CONSUMED"
    CONFIRMED = "CONFIRMED"
    # The sender cancelled the Message before this Delivery was sent (never sent after).
    CANCELLED = "CANCELLED"


#: Statuses after which Pushline never sends the Delivery again.
FINAL_STATUSES = frozenset(
    {
        DeliveryStatus.SENT,
        DeliveryStatus.ERROR,
        DeliveryStatus.RECEIVED,
        DeliveryStatus.CONSUMED,
        DeliveryStatus.CONFIRMED,
        DeliveryStatus.CANCELLED,
    }
)


#: Statuses the app reports after a send, in the order they may follow each other.
ENGAGEMENT_ORDER = (
    DeliveryStatus.SENT,
    DeliveryStatus.RECEIVED,
    DeliveryStatus.CONSUMED,
    DeliveryStatus.CONFIRMED,
)
ENGAGEMENT_STATUSES = frozenset(ENGAGEMENT_ORDER[1:])


def engagement_moves(current: str, reported: str) -> bool:
    """True when a reported status moves a Delivery forward. Statuses never go backwards:
    CONSUMED after CONFIRMED is a no-op. Only a sent Delivery can be engaged with (QUEUED
    and ERROR never reached the device as far as Pushline knows)."""
    if reported not in ENGAGEMENT_STATUSES or current not in ENGAGEMENT_ORDER:
        return False
    return ENGAGEMENT_ORDER.index(DeliveryStatus(reported)) > ENGAGEMENT_ORDER.index(
        DeliveryStatus(current)
    )


class ResultCode(IntEnum):
    QUEUED_COMMUNICATION_FAILED = -1
    SENT = 0
    INVALID_DATA = 1
    TARGET_NOT_FOUND = 2
    NOT_QUEUED = 3
    CONFIGURATION_EXPIRED = 4
    TOKEN_MISSING = 5
    TOKEN_REJECTED = 6
    REGISTRATION_EXPIRED = 7
    TOO_MANY_FOR_DEVICE = 8
    PAYLOAD_TOO_LARGE = 9
    NOT_ACCEPTED = 10
    RECOVERABLE_IO = 11
    COMMUNICATION_FAILED = 12
    PROVIDER_UNREACHABLE = 13
    QUOTA_EXCEEDED = 14


CODE_MEANINGS: dict[int, str] = {
    -1: "queued; communication with the provider failed",
    0: "sent",
    1: "rejected: invalid data",
    2: "target type not found or invalid",
    3: "could not be queued",
    4: "notification configuration expired",
    5: "push token missing",
    6: "device token rejected",
    7: "registration expired",
    8: "too many notifications to the device",
    9: "payload too large",
    10: "not accepted by the provider",
    11: "recoverable I/O problem, queued",
    12: "communication failed, not queued",
    13: "provider unreachable, not queued",
    14: "provider quota exceeded",
}


class MessageState(StrEnum):
    ACCEPTED = "accepted"  # persisted, fan-out not finished
    DISPATCHED = "dispatched"  # every Delivery row written and enqueued
    DONE = "done"  # every Delivery final
    FAILED = "failed"  # message-level failure (e.g. code 2: nothing matched)
    CANCELLED = "cancelled"  # the sender cancelled it: nothing more is sent


class Provider(StrEnum):
    APNS = "apns"
    FCM = "fcm"
    WEBPUSH = "webpush"  # W3C Push API subscriptions (RFC 8030 / 8291 / 8292)
    HMS = "hms"  # Huawei Push Kit (Android devices without Google services)


class Platform(StrEnum):
    IOS = "ios"
    IPADOS = "ipados"
    ANDROID = "android"
    WEB = "web"


class Role(StrEnum):
    PUSH_SINGLE = "push_single"
    PUSH_MULTIPLE = "push_multiple"
    PUSH_ALL = "push_all"
    REGISTRATIONS_READ = "pushregistrations_read"
    ADMIN = "admin"
