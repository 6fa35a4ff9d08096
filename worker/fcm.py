"""Sending to FCM: firebase-admin for everything FCM-specific, one HTTP/2 client for the wire.

Why not firebase-admin's own `send_each_async`: it mints the OAuth token synchronously on
the event loop inside its httpx auth flow (stalling every send on the process loop, APNs
included, for an RSA signature and a round trip), builds a google-auth `requests`
transport for every message, trusts certifi's CA bundle or one the process environment
names (SSL_CERT_FILE: for every httpx client in the process), and gathers a whole batch
at once with no bound (so it must be fed in chunks, and the connection idles at each
chunk's tail). Measured here against the simulator over HTTP/2 + TLS, one loop, 3,000
sends: stock `send_each_async` in chunks of 100 ~910/s at ~860 µs CPU per send; this
sender ~1,100/s at about the same CPU. The CPU is httpx's HTTP/2 stack in both; what made
FCM fast was HTTP/2 itself (the same stock client over plain HTTP/1.1, a connection per
request in flight: ~480/s, ~1,700 µs per send). So the wire is ours and the rest is the
library's:

- firebase-admin, per app: `credentials.Certificate` reads and checks the service account
  and holds the google-auth credentials (`get_credential()`, with firebase-admin's OAuth
  scopes); `messaging._get_messaging_service` gives the project, the request headers FCM
  expects (`_fcm_headers`, plus `_http_client.METRICS_HEADERS`), the encoding of a
  `messaging.Message` into its v1 JSON (`_message_data` → `encode_message`, the library's
  `MessageEncoder`, which also refuses invalid values), and the mapping of an HTTP error
  to its typed exception (`_handle_fcm_httpx_error`: UnregisteredError,
  QuotaExceededError, ...) from which `answer_from_error` reads status, FcmError code and
  Retry-After, as it did for `send_each_async`.
- google-auth mints the OAuth2 access token (`Credentials.refresh`, a signed JWT
  assertion posted to the service account's `token_uri`). `AccessTokens` keeps it until
  five minutes before it expires, refreshes it in a thread (never on the event loop) and
  once for all the sends waiting on it, and starts the next refresh in the background
  while the current token still works.
- Ours: the wire. For FCM's HTTPS URL, ONE HTTP/2 connection per app per process on the
  process loop through worker/h2client.py (a loop step's frames in one write; httpx's
  HTTP/2 stack was about two thirds of the worker's CPU per FCM message), so every send
  multiplexes onto one TLS connection; an `httpx.AsyncClient` for any other URL (a plain
  HTTP emulator). At most `send_concurrency` requests in flight; every call bounded by
  `send_timeout_s`. No library retries: our backoff owns them (every attempt counted,
  logged and spaced by one policy). The one exception is Google's own: a 401 without an
  FcmError means the access token was refused, so the token is dropped and that send
  tried once more with a fresh one, as firebase-admin's auth flow does. FCM's error
  answers go to firebase-admin as the httpx error it maps (`_exchange`, `_post`).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import time
from typing import Any

import firebase_admin
import google.auth.credentials
import google.auth.transport.requests
import httpx
import requests
from firebase_admin import _http_client, credentials, exceptions, messaging
from google.auth.exceptions import GoogleAuthError, RefreshError

from schemas.settings import Settings
from schemas.tables import App
from worker.h2client import Reply
from worker.httpsender import LoopClient
from worker.outcomes import ProviderAnswer
from worker.payloads import FCM_MAX_BYTES, FcmParts, fcm_message_size
from worker.tokens import SharedToken

#: Refresh this long before the access token expires (Google's tokens live an hour).
REFRESH_MARGIN_S = 300.0
_FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"


def point_at(url: str) -> None:
    # The endpoint is a class constant read when an app's messaging service is created
    # (DESIGN.md §4); set it before the first service exists. (firebase-admin's own send
    # path, used by the naive benchmark baseline and the simulator tests, reads it.)
    messaging._MessagingService.FCM_URL = url


class _TokenRequest(google.auth.transport.requests.Request):
    """google-auth's requests transport with our CA bundle on every call: requests lets
    $REQUESTS_CA_BUNDLE override a session's `verify`, but not a per-call one."""

    def __init__(self, session: requests.Session, verify: str | bool) -> None:
        super().__init__(session)
        self._verify = verify

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        kwargs.setdefault("verify", self._verify)
        return super().__call__(*args, **kwargs)


class AccessTokens(SharedToken):
    """One OAuth2 access token per service account, shared by every concurrent send."""

    def __init__(
        self,
        credential: google.auth.credentials.Credentials,
        session: requests.Session,
        verify: str | bool = True,
    ) -> None:
        super().__init__(REFRESH_MARGIN_S)
        self._credential = credential
        self._request = _TokenRequest(session, verify)

    async def _mint(self) -> tuple[str, float]:
        # google-auth's refresh signs (RSA) and blocks on HTTP: in a thread, not on the loop.
        return await asyncio.to_thread(self._mint_now)

    def _mint_now(self) -> tuple[str, float]:
        cred = self._credential
        cred.refresh(self._request)
        token = cred.token
        if not token:
            raise RefreshError("the token endpoint answered without an access token")
        # google-auth's expiry is a naive UTC datetime; no expiry means "an hour" to Google.
        expiry = cred.expiry
        if expiry is None:
            return str(token), time.time() + 3600
        return str(token), expiry.replace(tzinfo=dt.UTC).timestamp()


class FcmSender(LoopClient):
    """One app's FCM sender for this process; build and use it on the process loop."""

    def __init__(self, app: App, settings: Settings) -> None:
        assert app.fcm_service_account
        point_at(settings.fcm_url)
        info = json.loads(app.fcm_service_account)
        name = f"pushline-{app.id}-{app.updated_at.timestamp():.0f}"
        try:
            self.fb_app = firebase_admin.get_app(name)
        except ValueError:
            self.fb_app = firebase_admin.initialize_app(
                credentials.Certificate(info), {"httpTimeout": settings.send_timeout_s}, name=name
            )
        self.service = messaging._get_messaging_service(self.fb_app)
        self.url = httpx.URL(settings.fcm_url.format(self.fb_app.project_id))
        self.headers = {
            **_http_client.METRICS_HEADERS,
            **self.service._fcm_headers,
            "content-type": "application/json; charset=UTF-8",
        }
        session = requests.Session()
        self.tokens = AccessTokens(self.service._credential, session, settings.fcm_ca_file or True)
        self._session = session
        self.open_client(settings, settings.fcm_ca_file)
        self._request = httpx.Request("POST", self.url)  # what firebase-admin's errors name
        self._slots = asyncio.Semaphore(self.concurrency)

    async def send_many(self, items: list[tuple[str, FcmParts]]) -> list[ProviderAnswer]:
        """Send (token, parts) pairs, at most `concurrency` at once; answers keep the order."""
        return list(await asyncio.gather(*(self.send(token, parts) for token, parts in items)))

    async def send(self, token: str, parts: FcmParts, dry_run: bool = False) -> ProviderAnswer:
        """One message; never raises for what FCM or the network did (that is the answer)."""
        try:
            data = self.service._message_data(to_message(token, parts), dry_run)
        except ValueError as exc:  # checked before sending too; kept for direct callers
            return ProviderAnswer(400, "INVALID_ARGUMENT", detail=str(exc)[:300])
        body = json.dumps(data, separators=(",", ":"), ensure_ascii=False, allow_nan=False)
        content = body.encode()
        async with self._slots:
            try:
                async with asyncio.timeout(self.timeout):  # token, connection, answer: all of it
                    return await self._post(content)
            except TimeoutError:
                return ProviderAnswer(None, "timeout")

    async def _post(self, content: bytes) -> ProviderAnswer:
        for attempt in (1, 2):
            try:
                access = await self.tokens.get()
            except GoogleAuthError as exc:
                # As firebase-admin reported it: an UnknownError caused by google-auth's.
                return answer_from_error(exceptions.UnknownError(str(exc), cause=exc))
            headers = {**self.headers, "authorization": f"Bearer {access}"}
            try:
                reply = await self._exchange(content, headers)
            except httpx.HTTPError as exc:
                return answer_from_error(self.service._handle_fcm_httpx_error(exc))
            if reply.status == 200:
                return ProviderAnswer(200, ref=_message_name(reply.body))
            if reply.status == 401 and attempt == 1 and not _has_fcm_error(reply.body):
                self.tokens.invalidate(access)
                continue
            # firebase-admin reads FCM's error (its typed exception) from an httpx answer.
            resp = httpx.Response(
                reply.status, headers=reply.headers, content=reply.body, request=self._request
            )
            error = httpx.HTTPStatusError(
                f"FCM answered {reply.status}", request=self._request, response=resp
            )
            return answer_from_error(self.service._handle_fcm_httpx_error(error))
        raise AssertionError("unreachable")

    async def _exchange(self, content: bytes, headers: dict[str, str]) -> Reply:
        """One POST; raises httpx's errors (which firebase-admin maps) for the wire's."""
        try:
            return await self.post(str(self.url), headers, content)
        except OSError as exc:  # ConnectionError and ssl errors too
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=self._request) from exc

    async def aclose(self) -> None:
        await super().aclose()
        self._session.close()

    def close(self) -> None:
        """Close from the process loop (the connection lives there), or drop if none runs."""
        try:
            asyncio.get_running_loop()
        except RuntimeError:
            self._session.close()  # no loop: the rest goes with the process
        super().close()


def _message_name(body: bytes) -> str | None:
    try:
        name = json.loads(body).get("name")
    except (ValueError, AttributeError):
        return None
    return name if isinstance(name, str) else None


def _has_fcm_error(body: bytes) -> bool:
    try:
        details = json.loads(body).get("error", {}).get("details") or []
    except (ValueError, AttributeError):
        return False
    return any(isinstance(d, dict) and d.get("@type") == _FCM_ERROR_TYPE for d in details)


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
