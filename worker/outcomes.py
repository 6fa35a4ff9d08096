"""Provider answers → (status, result code, what follows). The one table of DESIGN.md §3."""

from __future__ import annotations

from dataclasses import dataclass

from schemas.codes import DeliveryStatus, ResultCode
from worker.backoff import rule_for


@dataclass(frozen=True, slots=True)
class ProviderAnswer:
    """What a provider said about one notification, or that it said nothing."""

    status: int | None  # HTTP status; None when no answer came (timeout, connection failure)
    reason: str | None = None  # APNs reason, FCM errorCode (or the Google status)
    ref: str | None = None  # apns-id or FCM message name
    retry_after: float | None = None
    detail: str | None = None  # extra text worth keeping (FCM error message, exception text)


@dataclass(frozen=True, slots=True)
class Outcome:
    code: int
    status: DeliveryStatus
    retry: bool = False
    deactivate: bool = False
    message: str = ""


# APNs reasons (Apple's "Handling notification responses" table).
APNS_REASON_CODES: dict[str, ResultCode] = {
    "BadCollapseId": ResultCode.INVALID_DATA,
    "BadExpirationDate": ResultCode.INVALID_DATA,
    "BadMessageId": ResultCode.INVALID_DATA,
    "BadPriority": ResultCode.INVALID_DATA,
    "BadTopic": ResultCode.INVALID_DATA,
    "DuplicateHeaders": ResultCode.INVALID_DATA,
    "InvalidPushType": ResultCode.INVALID_DATA,
    "MissingTopic": ResultCode.INVALID_DATA,
    "PayloadEmpty": ResultCode.INVALID_DATA,
    "BadPath": ResultCode.INVALID_DATA,
    "MethodNotAllowed": ResultCode.INVALID_DATA,
    "BadCertificate": ResultCode.CONFIGURATION_EXPIRED,
    "BadCertificateEnvironment": ResultCode.CONFIGURATION_EXPIRED,
    "ExpiredProviderToken": ResultCode.CONFIGURATION_EXPIRED,
    "Forbidden": ResultCode.CONFIGURATION_EXPIRED,
    "InvalidProviderToken": ResultCode.CONFIGURATION_EXPIRED,
    "MissingProviderToken": ResultCode.CONFIGURATION_EXPIRED,
    "TopicDisallowed": ResultCode.CONFIGURATION_EXPIRED,
    "MissingDeviceToken": ResultCode.TOKEN_MISSING,
    "BadDeviceToken": ResultCode.TOKEN_REJECTED,
    "Unregistered": ResultCode.REGISTRATION_EXPIRED,
    "ExpiredToken": ResultCode.REGISTRATION_EXPIRED,
    "TooManyRequests": ResultCode.TOO_MANY_FOR_DEVICE,
    "PayloadTooLarge": ResultCode.PAYLOAD_TOO_LARGE,
    "DeviceTokenNotForTopic": ResultCode.NOT_ACCEPTED,
    "IdleTimeout": ResultCode.RECOVERABLE_IO,
    "InternalServerError": ResultCode.RECOVERABLE_IO,
    "ServiceUnavailable": ResultCode.RECOVERABLE_IO,
    "Shutdown": ResultCode.RECOVERABLE_IO,
    "TooManyProviderTokenUpdates": ResultCode.QUOTA_EXCEEDED,
}
APNS_STATUS_CODES: dict[int, ResultCode] = {
    400: ResultCode.INVALID_DATA,
    403: ResultCode.CONFIGURATION_EXPIRED,
    404: ResultCode.INVALID_DATA,
    405: ResultCode.INVALID_DATA,
    410: ResultCode.REGISTRATION_EXPIRED,
    413: ResultCode.PAYLOAD_TOO_LARGE,
    429: ResultCode.TOO_MANY_FOR_DEVICE,
    500: ResultCode.RECOVERABLE_IO,
    503: ResultCode.RECOVERABLE_IO,
}

# FCM v1 FcmError codes, then Google's canonical statuses when no FcmError came.
FCM_REASON_CODES: dict[str, ResultCode] = {
    "UNREGISTERED": ResultCode.REGISTRATION_EXPIRED,
    "SENDER_ID_MISMATCH": ResultCode.TOKEN_REJECTED,
    "QUOTA_EXCEEDED": ResultCode.QUOTA_EXCEEDED,
    "UNAVAILABLE": ResultCode.RECOVERABLE_IO,
    "INTERNAL": ResultCode.RECOVERABLE_IO,
    "THIRD_PARTY_AUTH_ERROR": ResultCode.CONFIGURATION_EXPIRED,
    "APNS_AUTH_ERROR": ResultCode.CONFIGURATION_EXPIRED,
    "INVALID_ARGUMENT": ResultCode.INVALID_DATA,
    "UNAUTHENTICATED": ResultCode.CONFIGURATION_EXPIRED,
    "PERMISSION_DENIED": ResultCode.CONFIGURATION_EXPIRED,
    "NOT_FOUND": ResultCode.REGISTRATION_EXPIRED,
    "RESOURCE_EXHAUSTED": ResultCode.QUOTA_EXCEEDED,
}
FCM_STATUS_CODES: dict[int, ResultCode] = {
    400: ResultCode.INVALID_DATA,
    401: ResultCode.CONFIGURATION_EXPIRED,
    403: ResultCode.CONFIGURATION_EXPIRED,
    404: ResultCode.REGISTRATION_EXPIRED,
    429: ResultCode.QUOTA_EXCEEDED,
    500: ResultCode.RECOVERABLE_IO,
    502: ResultCode.RECOVERABLE_IO,
    503: ResultCode.RECOVERABLE_IO,
    504: ResultCode.RECOVERABLE_IO,
}

# Web Push (RFC 8030 / 8292): the status says it all; push services word their bodies freely.
WEBPUSH_STATUS_CODES: dict[int, ResultCode] = {
    400: ResultCode.INVALID_DATA,
    401: ResultCode.CONFIGURATION_EXPIRED,  # VAPID token missing or invalid
    403: ResultCode.CONFIGURATION_EXPIRED,  # VAPID key not the one the subscription names
    404: ResultCode.REGISTRATION_EXPIRED,
    410: ResultCode.REGISTRATION_EXPIRED,
    413: ResultCode.PAYLOAD_TOO_LARGE,
    429: ResultCode.TOO_MANY_FOR_DEVICE,
}

#: What each provider answers when it took the notification.
SUCCESS_STATUSES: dict[str, frozenset[int]] = {
    "apns": frozenset({200}),
    "fcm": frozenset({200}),
    "webpush": frozenset({200, 201, 202}),  # RFC 8030 says 201 Created; some say 200/202
}
LABELS = {"apns": "APNs", "fcm": "FCM", "webpush": "Web Push"}

DEACTIVATING = frozenset({ResultCode.TOKEN_REJECTED, ResultCode.REGISTRATION_EXPIRED})


def classify(provider: str, answer: ProviderAnswer) -> Outcome:
    """Map one provider answer to its outcome; pure, table-driven."""
    if answer.status is None:
        code = ResultCode.QUEUED_COMMUNICATION_FAILED
        text = f"no answer from {provider}: {answer.detail or answer.reason or 'unknown'}"
        return Outcome(code, DeliveryStatus.QUEUED, retry=True, message=text)
    if answer.status in SUCCESS_STATUSES.get(provider, frozenset({200})):
        return Outcome(ResultCode.SENT, DeliveryStatus.SENT, message="sent")
    code = _code_for(provider, answer)
    label = LABELS.get(provider, provider)
    text = f"The payload was rejected by {label}: {answer.reason or answer.status}"
    if answer.detail:
        text = f"{text} ({answer.detail})"
    # Which answers are retried is the retry table's call (backoff.py), not this one's.
    if rule_for(code, answer.reason) is not None:
        return Outcome(code, DeliveryStatus.QUEUED, retry=True, message=text)
    return Outcome(code, DeliveryStatus.ERROR, deactivate=code in DEACTIVATING, message=text[:500])


def _code_for(provider: str, answer: ProviderAnswer) -> ResultCode:
    reason = answer.reason or ""
    status = answer.status or 0
    if provider == "webpush":
        if status >= 500:
            return ResultCode.RECOVERABLE_IO
        return WEBPUSH_STATUS_CODES.get(status, ResultCode.NOT_ACCEPTED)
    if provider == "apns":
        return APNS_REASON_CODES.get(reason) or APNS_STATUS_CODES.get(
            answer.status or 0, ResultCode.NOT_ACCEPTED
        )
    if reason == "INVALID_ARGUMENT":
        # FCM says INVALID_ARGUMENT for a bad token and for a bad message alike.
        detail = (answer.detail or "").lower()
        if "token" in detail:
            return ResultCode.TOKEN_REJECTED
        if "too big" in detail or "too large" in detail:
            return ResultCode.PAYLOAD_TOO_LARGE
    return FCM_REASON_CODES.get(reason) or FCM_STATUS_CODES.get(
        answer.status or 0, ResultCode.NOT_ACCEPTED
    )
