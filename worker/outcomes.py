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

# Huawei Push Kit answers most requests with HTTP 200 and says what happened in the body's
# `code` (Huawei's "Push Kit server result codes"). One token per request, so a code about
# "the tokens" is about this device's.
HMS_SUCCESS = "80000000"
HMS_REASON_CODES: dict[str, ResultCode] = {
    "80100000": ResultCode.REGISTRATION_EXPIRED,  # partly failed: this token is listed illegal
    "80100001": ResultCode.INVALID_DATA,  # some request parameters are incorrect
    "80100003": ResultCode.INVALID_DATA,  # incorrect message structure
    "80100004": ResultCode.INVALID_DATA,  # message expiry earlier than now (ttl)
    "80100013": ResultCode.INVALID_DATA,  # collapse_key incorrect
    "80100016": ResultCode.NOT_ACCEPTED,  # the message contains sensitive information
    "80200001": ResultCode.CONFIGURATION_EXPIRED,  # OAuth authentication error
    "80200003": ResultCode.CONFIGURATION_EXPIRED,  # OAuth token expired (a fresh one failed too)
    # No permission to send to the token: Push Kit not enabled for the app, or the token of
    # another app. An app setting, never a reason to retire every device of the app.
    "80300002": ResultCode.CONFIGURATION_EXPIRED,
    "80300007": ResultCode.REGISTRATION_EXPIRED,  # all tokens invalid (uninstalled, replaced)
    "80300008": ResultCode.PAYLOAD_TOO_LARGE,  # message body over the size limit
    "80300010": ResultCode.INVALID_DATA,  # token count outside 1..1000 in the body
    "80300011": ResultCode.CONFIGURATION_EXPIRED,  # no permission for high-priority messages
    "81000001": ResultCode.RECOVERABLE_IO,  # Push Kit internal error
}
HMS_STATUS_CODES: dict[int, ResultCode] = {
    400: ResultCode.INVALID_DATA,
    401: ResultCode.CONFIGURATION_EXPIRED,
    403: ResultCode.CONFIGURATION_EXPIRED,
    404: ResultCode.INVALID_DATA,
    413: ResultCode.PAYLOAD_TOO_LARGE,
    # Push Kit's flow control (QPS over the app's quota) is 503, or 429 at the front end:
    # slow down and try again, whatever the body says.
    429: ResultCode.TOO_MANY_FOR_DEVICE,
    503: ResultCode.TOO_MANY_FOR_DEVICE,
}

#: What each provider answers when it took the notification.
SUCCESS_STATUSES: dict[str, frozenset[int]] = {
    "apns": frozenset({200}),
    "fcm": frozenset({200}),
    "webpush": frozenset({200, 201, 202}),  # RFC 8030 says 201 Created; some say 200/202
    "hms": frozenset({200}),  # and the body's code 80000000 (see `_succeeded`)
}
LABELS = {"apns": "APNs", "fcm": "FCM", "webpush": "Web Push", "hms": "Huawei Push Kit"}

DEACTIVATING = frozenset({ResultCode.TOKEN_REJECTED, ResultCode.REGISTRATION_EXPIRED})


def classify(provider: str, answer: ProviderAnswer) -> Outcome:
    """Map one provider answer to its outcome; pure, table-driven."""
    if answer.status is None:
        code = ResultCode.QUEUED_COMMUNICATION_FAILED
        text = f"no answer from {provider}: {answer.detail or answer.reason or 'unknown'}"
        return Outcome(code, DeliveryStatus.QUEUED, retry=True, message=text)
    if _succeeded(provider, answer):
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


def _succeeded(provider: str, answer: ProviderAnswer) -> bool:
    if answer.status not in SUCCESS_STATUSES.get(provider, frozenset({200})):
        return False
    # Push Kit's HTTP 200 may carry an error code in the body.
    return provider != "hms" or answer.reason in (None, HMS_SUCCESS)


def _code_for(provider: str, answer: ProviderAnswer) -> ResultCode:
    reason = answer.reason or ""
    status = answer.status or 0
    if provider == "hms":
        if status in (429, 503):
            return HMS_STATUS_CODES[status]
        if reason in HMS_REASON_CODES:
            return HMS_REASON_CODES[reason]
        if status >= 500:
            return ResultCode.RECOVERABLE_IO
        return HMS_STATUS_CODES.get(status, ResultCode.NOT_ACCEPTED)
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
