"""Sending to APNs through aioapns, on the process loop, each call bounded by a timeout."""

from __future__ import annotations

import asyncio
import os
import ssl
import tempfile
import time
from typing import Any

import jwt
import structlog
from aioapns import APNs, NotificationRequest, PushType
from aioapns.common import NotificationResult
from aioapns.connection import APNsTLSClientProtocol, AuthorizationHeaderProvider
from aioapns.exceptions import ConnectionClosed, ConnectionError, MaxAttemptsExceeded
from h2.utilities import SizeLimitDict

from schemas.settings import Settings
from schemas.tables import App
from worker import h2client
from worker.outcomes import ProviderAnswer
from worker.payloads import ApnsRequest

log = structlog.get_logger("pushline.apns")


class ProviderToken(AuthorizationHeaderProvider):
    """The APNs JWT of one app in this process, shared by every connection of its pool.

    aioapns gives each connection its own token and keeps it 30 minutes, with no way to
    renew it early; APNs answers ExpiredProviderToken when it judges a token too old, and
    the only cure is a fresh one, on every connection at once.
    """

    TTL_S = 30 * 60  # APNs accepts a token for an hour and refuses renewals within 20 minutes

    def __init__(self, key_pem: str, key_id: str, team_id: str, app_id: str) -> None:
        self.key_pem, self.key_id, self.team_id, self.app_id = key_pem, key_id, team_id, app_id
        self.generation = 0
        self.remints = 0
        self._issued_at = 0.0
        self._header = ""
        # Minted now, so that every request's token has a generation to report against.
        self._mint(time.time())

    def get_header(self) -> str:
        now = time.time()
        if now - self._issued_at >= self.TTL_S:
            self._mint(now)
        return self._header

    def expire(self, generation: int) -> bool:
        """APNs called the token of `generation` expired: mint a new one, unless a request
        answered earlier already did (one chunk may bring hundreds of these answers)."""
        if generation != self.generation:
            return False
        self._mint(time.time())
        self.remints += 1
        log.warning(
            "apns provider token re-minted",
            app=self.app_id,
            reason="ExpiredProviderToken",
            remints=self.remints,
        )
        return True

    def _mint(self, now: float) -> None:
        self._issued_at = now
        token = jwt.encode(
            {"iss": self.team_id, "iat": int(now)},
            self.key_pem,
            algorithm="ES256",
            headers={"kid": self.key_id},
        )
        self._header = f"bearer {token}"
        self.generation += 1


class LeanEncoder(h2client.LeanEncoder):
    """HPACK for APNs requests: `:path` (the device token), `apns-id` and
    `apns-expiration` change with each notification, so they are sent as they are."""

    ONCE = frozenset({b":path", b"apns-id", b"apns-expiration"})


class GuardedProtocol(APNsTLSClientProtocol):
    """aioapns 4.0's protocol with four measured defects mended (DESIGN.md §4).

    1. `request_streams` keeps an entry for every successful send until the connection
       closes (~170 bytes each): we drop it when the stream ends.
    2. An answer arriving after our timeout cancelled the future made `set_result` raise
       InvalidStateError inside `data_received`, killing the connection and stranding every
       other stream on it: we discard answers for futures that are already done.
    3. Error bodies were never acknowledged to HTTP/2 flow control: after ~64 KiB of them
       (~1,300 Unregistered answers) the server may send nothing more on the connection
       and every later send hangs. We give the window back for every DATA frame.

    4. h2 keeps `authorization` out of HPACK's table (never indexed), so the ~200-byte
       provider token was Huffman-encoded and sent whole with every request (~88 µs
       each). The token is the same on a connection for 30 minutes and travels only to
       APNs over TLS: we let it be indexed, so it costs a byte after the first request.
       aioapns builds lower-case, valid headers, so h2's outbound normalisation (which
       does the never-indexing) and validation are skipped.

    5. Per-notification header values are not indexed or Huffman-coded (LeanEncoder).
    6. Every send flushed the connection at once: a write (a TLS record and a system
       call) and a new inactivity timer per notification. The frames of one loop step
       now go out together, once, after it: a chunk starting hundreds of sends writes
       them in one go.

    Also: h2 remembers up to 65,536 closed streams per connection (~6 MB); a client that
    opens millions of short streams needs only the recent ones.
    """

    CLOSED_STREAMS_KEPT = 1024
    PROVIDER_TOKEN: ProviderToken | None = None  # set per app by protocol_for

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self.conn._closed_streams = SizeLimitDict(size_limit=self.CLOSED_STREAMS_KEPT)
        self.conn.config.normalize_outbound_headers = False
        self.conn.config.validate_outbound_headers = False
        # Answers come from APNs over TLS; h2's per-header checks of them were ~4 % of a
        # worker's CPU per notification and guard against nothing APNs sends.
        self.conn.config.validate_inbound_headers = False
        self.conn.config.normalize_inbound_headers = False
        self.conn.encoder = LeanEncoder()
        if self.auth_provider is not None and self.PROVIDER_TOKEN is not None:
            # The app's shared token replaces the per-connection one aioapns made.
            self.auth_provider = self.PROVIDER_TOKEN
        self._flush_due = False

    def flush(self) -> None:
        if not self._flush_due:
            self._flush_due = True
            self.loop.call_soon(self._flush_step)

    def _flush_step(self) -> None:
        self._flush_due = False
        if self.transport is None:
            return
        self.refresh_inactivity_timer()
        data = self.conn.data_to_send()
        if data:
            self.transport.write(data)

    def on_stream_ended(self, stream_id: int) -> None:
        self.request_streams.pop(stream_id, None)
        super().on_stream_ended(stream_id)

    def on_response_received(self, headers: dict[bytes, bytes]) -> None:
        notification_id = headers.get(b"apns-id", b"").decode()
        if self._abandoned(notification_id):
            return
        super().on_response_received(headers)

    def on_data_received(self, raw_data: bytes, stream_id: int) -> None:
        self.conn.acknowledge_received_data(len(raw_data), stream_id)
        notification_id = self.request_streams.get(stream_id)
        if notification_id is not None and self._abandoned(notification_id):
            self.request_streams.pop(stream_id, None)
            return
        super().on_data_received(raw_data, stream_id)

    def _abandoned(self, notification_id: str) -> bool:
        future = self.requests.get(notification_id)
        if future is not None and future.done():
            self.requests.pop(notification_id, None)
            self.request_statuses.pop(notification_id, None)
            return True
        return False


def protocol_for(host: str, port: int, token: ProviderToken | None = None) -> type[GuardedProtocol]:
    # aioapns has no host argument: the protocol class carries it (DESIGN.md §4), and the
    # app's shared provider token with it.
    return type(
        "PushlineAPNsProtocol",
        (GuardedProtocol,),
        {"APNS_SERVER": host, "APNS_PORT": port, "PROVIDER_TOKEN": token},
    )


class _ExtraPushType:
    """aioapns only reads `.value`; its enum lacks Apple's newer types (location, pushtotalk)."""

    def __init__(self, value: str) -> None:
        self.value = value


def _push_type(name: str) -> PushType | _ExtraPushType:
    try:
        return PushType(name)
    except ValueError:
        return _ExtraPushType(name)


async def _quiet(_request: NotificationRequest, _result: NotificationResult) -> None:
    """aioapns logs every rejection at ERROR; we record and log them ourselves."""


class ApnsSender:
    """One app's APNs client; build it inside the running loop (aioapns binds to it)."""

    def __init__(self, app: App, settings: Settings) -> None:
        self.topic = app.apns_topic or ""
        self.timeout = settings.send_timeout_s
        host = settings.apns_sandbox_host if app.apns_sandbox else settings.apns_host
        ctx = ssl.create_default_context(cafile=settings.apns_ca_file)
        ctx.set_alpn_protocols(["h2"])
        kwargs: dict[str, Any] = {
            "topic": self.topic,
            "ssl_context": ctx,
            "max_connections": 4,
            "max_connection_attempts": 2,
            "use_sandbox": app.apns_sandbox,
            "err_func": _quiet,
        }
        self._cert_file: str | None = None
        self.token: ProviderToken | None = None
        if app.apns_cert_pem:
            fd, self._cert_file = tempfile.mkstemp(prefix="pushline-apns-", suffix=".pem")
            with os.fdopen(fd, "w") as f:
                f.write(app.apns_cert_pem)
            kwargs["client_cert"] = self._cert_file
        else:
            kwargs.update(key=app.apns_key_pem, key_id=app.apns_key_id, team_id=app.apns_team_id)
            self.token = ProviderToken(
                app.apns_key_pem or "", app.apns_key_id or "", app.apns_team_id or "", app.id
            )
        try:
            self.client = APNs(**kwargs)
        finally:
            if self._cert_file:
                os.unlink(self._cert_file)  # loaded (or refused): keep no copy on disk
        self.client.pool.protocol_class = protocol_for(host, settings.apns_port, self.token)

    async def send(self, token: str, notification_id: str, req: ApnsRequest) -> ProviderAnswer:
        request = NotificationRequest(
            device_token=token,
            message=req.body,
            notification_id=notification_id,
            time_to_live=req.time_to_live,
            priority=req.priority,
            collapse_key=req.collapse_id,
            push_type=_push_type(req.push_type),  # type: ignore[arg-type]
            # VoIP and the other PushKit types go to the topic with their suffix.
            apns_topic=self.topic + req.topic_suffix if req.topic_suffix else None,
        )
        generation = self.token.generation if self.token is not None else 0
        try:
            # asyncio.timeout, not wait_for: wait_for wraps every send in a Task of its own.
            async with asyncio.timeout(self.timeout):
                result = await self.client.send_notification(request)
        except TimeoutError:
            return ProviderAnswer(None, "timeout", detail=f"no answer within {self.timeout}s")
        except (ConnectionError, ConnectionClosed, MaxAttemptsExceeded, OSError) as exc:
            return ProviderAnswer(None, "connection", detail=type(exc).__name__)
        if result.description == "ExpiredProviderToken" and self.token is not None:
            self.token.expire(generation)
        return ProviderAnswer(
            status=int(result.status),
            reason=result.description,
            ref=result.notification_id,
        )

    def close(self) -> None:
        self.client.pool.close()
