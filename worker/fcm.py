"""Sending to FCM through firebase-admin's `send_each_async`, bounded and on the process loop."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import firebase_admin
from firebase_admin import _http_client, credentials, exceptions, messaging
from google.auth.exceptions import RefreshError

from schemas.settings import Settings
from schemas.tables import App
from worker.outcomes import ProviderAnswer
from worker.payloads import FCM_MAX_BYTES, FcmParts, fcm_message_size


def point_at(url: str) -> None:
    # The endpoint is a class constant read when an app's messaging service is created
    # (DESIGN.md §4); set it before the first service exists.
    messaging._MessagingService.FCM_URL = url


class FcmSender:
    def __init__(self, app: App, settings: Settings) -> None:
        assert app.fcm_service_account
        point_at(settings.fcm_url)
        self.timeout = settings.send_timeout_s
        self.concurrency = settings.send_concurrency
        info = json.loads(app.fcm_service_account)
        name = f"pushline-{app.id}-{app.updated_at.timestamp():.0f}"
        try:
            self.fb_app = firebase_admin.get_app(name)
        except ValueError:
            self.fb_app = firebase_admin.initialize_app(
                credentials.Certificate(info), {"httpTimeout": settings.send_timeout_s}, name=name
            )
        service = messaging._get_messaging_service(self.fb_app)
        # The library retries 500/503 itself, ignoring Retry-After; our backoff owns retries
        # so that every attempt is counted, logged and spaced by one policy.
        service._async_client = _http_client.HttpxAsyncClient(
            credential=service._credential,
            timeout=int(settings.send_timeout_s),
            retry_config=_http_client.HttpxRetry(max_retries=0),
        )

    async def send_many(self, items: list[tuple[str, FcmParts]]) -> list[ProviderAnswer]:
        """Send (token, parts) pairs, at most `concurrency` at once; answers keep the order."""
        answers: list[ProviderAnswer] = []
        for start in range(0, len(items), self.concurrency):
            batch = [
                to_message(token, parts) for token, parts in items[start : start + self.concurrency]
            ]
            try:
                result = await asyncio.wait_for(
                    messaging.send_each_async(batch, app=self.fb_app), timeout=self.timeout * 2
                )
            except TimeoutError:
                answers.extend(ProviderAnswer(None, "timeout") for _ in batch)
                continue
            except exceptions.FirebaseError as exc:
                answers.extend(answer_from_error(exc) for _ in batch)
                continue
            for resp in result.responses:
                if resp.success:
                    answers.append(ProviderAnswer(200, ref=resp.message_id))
                else:
                    answers.append(answer_from_error(resp.exception))
        return answers


def to_message(token: str, parts: FcmParts) -> messaging.Message:
    android = parts.android
    note = android.get("notification")
    apns = None
    if parts.apns_headers or parts.apns_aps or parts.apns_custom:
        # `aps` is built by the same code as a direct APNs push; passed through whole.
        apns = messaging.APNSConfig(
            headers=parts.apns_headers or None,
            payload=messaging.APNSPayload(
                aps=messaging.Aps(custom_data=parts.apns_aps), **(parts.apns_custom or {})
            ),
        )
    return messaging.Message(
        token=token,
        notification=messaging.Notification(**parts.notification) if parts.notification else None,
        data=parts.data,
        android=messaging.AndroidConfig(
            priority=android.get("priority"),
            ttl=android.get("ttl"),
            collapse_key=android.get("collapse_key"),
            notification=messaging.AndroidNotification(**note) if note else None,
        ),
        apns=apns,
    )


def encoded_message(token: str, parts: FcmParts) -> dict[str, Any]:
    """The `message` object firebase-admin sends; ValueError when it refuses a value."""
    encoded: dict[str, Any] = messaging._MessagingService.encode_message(to_message(token, parts))
    return encoded


def fcm_too_large(token: str, parts: FcmParts) -> bool:
    """FCM's 4096-byte limit, checked on the encoded message so no request is wasted.

    Measured on the whole `message` object, token included, compact JSON: the strictest
    reading (the simulator's), so nothing we pass is refused for its size.
    """
    return fcm_message_size(encoded_message(token, parts)) > FCM_MAX_BYTES


def answer_from_error(exc: BaseException | None) -> ProviderAnswer:
    """Read status, FcmError code, message and Retry-After from the HTTP answer itself."""
    response = getattr(exc, "http_response", None)
    cause = getattr(exc, "cause", None) or getattr(exc, "__cause__", None)
    if response is None and isinstance(cause, RefreshError) and not cause.retryable:
        # Google's token endpoint refused the service account: wrong credentials (code 4),
        # not a network problem to retry.
        return ProviderAnswer(401, "UNAUTHENTICATED", detail=f"OAuth token refused: {cause}"[:300])
    if response is None:
        # No HTTP answer at all: a transport failure (-1), never a provider verdict.
        return ProviderAnswer(None, "connection", detail=str(exc)[:200])
    reason, detail = None, None
    try:
        err = response.json().get("error", {})
        detail = err.get("message")
        reason = err.get("status")
        for d in err.get("details") or []:
            if d.get("@type", "").endswith("FcmError") and d.get("errorCode"):
                reason = d["errorCode"]
            for v in d.get("fieldViolations") or []:
                detail = f"{detail}; {v.get('field')}: {v.get('description')}"
    except (ValueError, AttributeError):
        detail = str(exc)[:200]
    retry_after = _retry_after(response.headers.get("retry-after"))
    return ProviderAnswer(
        response.status_code, reason, retry_after=retry_after, detail=(detail or "")[:300]
    )


def _retry_after(value: str | None) -> float | None:
    if not value:
        return None
    try:
        return float(value)
    except ValueError:
        return None  # an HTTP date; FCM sends seconds
