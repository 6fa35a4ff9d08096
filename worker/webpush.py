"""Sending Web Push (RFC 8030 delivery, RFC 8291 encryption, RFC 8292 VAPID).

The cryptography is the libraries': `http_ece` encrypts each payload as aes128gcm for the
subscription's keys (a fresh ephemeral P-256 key and salt per message, as RFC 8291 asks),
`py_vapid` signs the VAPID JWT. The wire is ours: per app per process, on the process
loop, one HTTP/2 connection per push-service origin through worker/h2client.py (every
browser vendor's push service offers HTTP/2 over TLS), or an `httpx.AsyncClient` for an
origin that does not; at most `send_concurrency` requests in flight, every call bounded
by `send_timeout_s`, no library retries (backoff.py owns them).

A VAPID token names its audience (the endpoint's origin) and an expiry at most 24 h
away; it is minted once per origin and reused until a tenth of its life is left, so a
push service sees the same token for hours (cheap for it to verify, cheap for us).
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Mapping
from email.utils import parsedate_to_datetime
from http import HTTPStatus

import http_ece
import httpx
import structlog
from cryptography.hazmat.primitives.asymmetric import ec
from py_vapid import Vapid02

from schemas.settings import Settings
from schemas.tables import App
from schemas.webpush import b64url_decode, load_vapid_key, origin
from worker.httpsender import LoopClient
from worker.outcomes import ProviderAnswer
from worker.payloads import WEBPUSH_MAX_BYTES, WebPushRequest, webpush_plaintext

log = structlog.get_logger("pushline.webpush")

#: RFC 8292 §2: a push service refuses tokens valid for more than 24 h.
VAPID_MAX_TTL_S = 24 * 3600


class VapidTokens:
    """The app's VAPID Authorization header per push-service origin, reused until near expiry."""

    def __init__(self, private_key_pem: str, subject: str, ttl_s: int = 12 * 3600) -> None:
        load_vapid_key(private_key_pem)  # ValueError now, not on the first send
        self._vapid = Vapid02.from_pem(private_key_pem.encode())
        self.subject = subject
        self.ttl_s = min(ttl_s, VAPID_MAX_TTL_S)
        self._headers: dict[str, tuple[float, str]] = {}  # origin -> (expires at, header)
        self.minted = 0

    def header(self, audience: str, now: float | None = None) -> str:
        now = time.time() if now is None else now
        hit = self._headers.get(audience)
        if hit is not None and now < hit[0] - self.ttl_s / 10:
            return hit[1]
        expires = int(now) + self.ttl_s
        signed = self._vapid.sign({"aud": audience, "sub": self.subject, "exp": expires})
        header = str(signed["Authorization"])
        self._headers[audience] = (expires, header)
        self.minted += 1
        return header


def encrypt(plaintext: bytes, p256dh: str, auth: str) -> bytes:
    """RFC 8291: aes128gcm for one subscription, in one record, with a fresh key and salt."""
    return bytes(
        http_ece.encrypt(
            plaintext,
            salt=os.urandom(16),
            private_key=ec.generate_private_key(ec.SECP256R1()),
            dh=b64url_decode(p256dh),
            auth_secret=b64url_decode(auth),
            version="aes128gcm",
        )
    )


def request_headers(req: WebPushRequest, authorization: str) -> dict[str, str]:
    """The RFC 8030 headers of one push message."""
    headers = {
        "ttl": str(req.ttl),
        "urgency": req.urgency,
        "content-encoding": "aes128gcm",
        "content-type": "application/octet-stream",
        "authorization": authorization,
    }
    if req.topic:
        headers["topic"] = req.topic
    return headers


class WebPushSender(LoopClient):
    """One app's Web Push sender for this process; build and use it on the process loop."""

    def __init__(self, app: App, settings: Settings) -> None:
        if not app.webpush_private_key_pem or not app.webpush_subject:
            raise ValueError("the app has no VAPID key and subject")
        self.vapid = VapidTokens(
            app.webpush_private_key_pem, app.webpush_subject, settings.webpush_vapid_ttl_s
        )
        self.open_client(settings, settings.webpush_ca_file)
        self._slots = asyncio.Semaphore(self.concurrency)

    async def send(
        self, endpoint: str, keys: tuple[str, str], req: WebPushRequest
    ) -> ProviderAnswer:
        """One push message; never raises for what the push service or the network did."""
        try:
            body = encrypt(webpush_plaintext(req), *keys)
        except (ValueError, http_ece.ECEException) as exc:
            # Keys that passed registration always work; kept for rows written otherwise.
            return ProviderAnswer(400, "BadSubscriptionKeys", detail=str(exc)[:300])
        if len(body) > WEBPUSH_MAX_BYTES:  # checked before sending too (deliver.py)
            return ProviderAnswer(413, "PayloadTooLarge", detail=f"{len(body)} bytes encrypted")
        headers = request_headers(req, self.vapid.header(origin(endpoint)))
        async with self._slots:
            try:
                async with asyncio.timeout(self.timeout):
                    return await self._post(endpoint, headers, body)
            except TimeoutError:
                return ProviderAnswer(None, "timeout", detail=f"no answer within {self.timeout}s")
            except (httpx.HTTPError, OSError) as exc:  # ConnectionError and ssl errors too
                return ProviderAnswer(None, "connection", detail=type(exc).__name__)

    async def _post(self, endpoint: str, headers: dict[str, str], body: bytes) -> ProviderAnswer:
        reply = await self.post(endpoint, headers, body)
        return answer_from(reply.status, reply.headers, reply.text)


def answer_from(status: int, headers: Mapping[str, str], text: str) -> ProviderAnswer:
    """Status, the push message resource (Location, RFC 8030 §5) and Retry-After."""
    if 200 <= status < 300:
        location = headers.get("location")
        return ProviderAnswer(status, ref=location[:255] if location else None)
    detail = text.strip()[:300] or None
    try:
        reason: str | None = HTTPStatus(status).phrase
    except ValueError:
        reason = None
    return ProviderAnswer(
        status, reason, retry_after=retry_after_s(headers.get("retry-after")), detail=detail
    )


def retry_after_s(value: str | None, now: float | None = None) -> float | None:
    """Retry-After in seconds: delta-seconds or an HTTP date (RFC 9110 §10.2.3)."""
    if not value:
        return None
    try:
        return max(0.0, float(value))
    except ValueError:
        pass
    try:
        when = parsedate_to_datetime(value)
    except (TypeError, ValueError):
        return None
    return max(0.0, when.timestamp() - (time.time() if now is None else now))
