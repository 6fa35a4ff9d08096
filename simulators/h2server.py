"""The HTTP/2 server machinery both TLS simulators share, on `h2` + asyncio.

A subclass answers complete requests in `handle` and sends through `conn`; this base reads
frames, gives receive-window credit back at once, and keeps response bodies the client's
window cannot take yet in `pending` until a WINDOW_UPDATE opens it.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from abc import ABC, abstractmethod
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

from h2.config import H2Configuration
from h2.connection import H2Connection
from h2.errors import ErrorCodes
from h2.events import (
    ConnectionTerminated,
    DataReceived,
    RequestReceived,
    StreamEnded,
    StreamReset,
    WindowUpdated,
)
from h2.exceptions import H2Error, ProtocolError
from h2.settings import SettingCodes, Settings

from simulators.core import REDACTED


class H2Stream:
    """One request as it arrives: pseudo-headers apart, regular headers by lower-case name."""

    __slots__ = ("method", "path", "authority", "headers", "duplicated", "malformed", "body")

    def __init__(self, raw: list[tuple[bytes, bytes]]) -> None:
        headers: dict[bytes, bytes] = {}
        regular = 0
        method = path = authority = b""
        malformed = False
        for name, value in raw:
            if name[:1] == b":":
                if name == b":method":
                    method = value
                elif name == b":path":
                    path = value
                elif name == b":authority":
                    authority = value
                continue
            regular += 1
            lowered = name.lower()
            malformed = malformed or lowered != name
            headers[lowered] = value
        self.method = method
        self.path = path
        self.authority = authority
        self.headers = headers
        # A regular header sent twice (APNs answers DuplicateHeaders); the last one is kept.
        self.duplicated = regular != len(headers)
        # RFC 9113 §8.2.1: an upper-case field name makes the request malformed; Google's
        # and Apple's front ends reset such a stream, so the simulators do too.
        self.malformed = malformed
        self.body = bytearray()


def capture_headers(headers: dict[bytes, bytes]) -> Callable[[], dict[str, str]]:
    """Request headers for capture, built only if capture is on; credentials redacted."""

    def build() -> dict[str, str]:
        out = {k.decode("latin-1"): v.decode("utf-8", "replace") for k, v in headers.items()}
        if "authorization" in out:
            out["authorization"] = REDACTED
        return out

    return build


@dataclass(frozen=True)
class JsonAnswer:
    """One HTTP answer with a JSON body, transport-free: a simulator's HTTP/1.1 app and its
    HTTP/2 server both send it."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode()


class H2ServerProtocol(asyncio.Protocol, ABC):
    """One HTTP/2 connection; many concurrent streams, each handed to `handle` as it ends.

    Answers are written to `conn`; data_received flushes once for the whole batch, so an
    answer sent later (a simulated latency) must call `_flush` itself.
    """

    #: SETTINGS_MAX_CONCURRENT_STREAMS announced to the client.
    max_concurrent_streams = 100
    #: Send each body as ONE DATA frame or not at all (for clients that parse each frame
    #: as a whole document); otherwise bodies go in as many frames as the windows allow.
    whole_body_frames = False
    #: The content type `respond_json` gives its answers (as the real service spells it).
    json_content_type = b"application/json"

    def __init__(self) -> None:
        self.conn = H2Connection(
            H2Configuration(
                client_side=False,
                header_encoding=None,
                # Clients here are real libraries (aioapns, httpx/h2); h2's per-header
                # character checks cost ~10% of a request and catch nothing they would send.
                validate_inbound_headers=False,
                normalize_inbound_headers=False,
                # We build every outbound header ourselves; skipping validation is cheaper.
                validate_outbound_headers=False,
                normalize_outbound_headers=False,
            )
        )
        self.transport: asyncio.Transport | None = None
        self.streams: dict[int, H2Stream] = {}
        # Bodies (or their rest) waiting for the client to open its receive window again.
        self.pending: dict[int, bytes] = {}
        self.closed = False

    @abstractmethod
    def handle(self, stream_id: int, stream: H2Stream) -> None:
        """Answer one complete request (headers and body received, stream ended)."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn.local_settings = Settings(
            client=False,
            initial_values={
                SettingCodes.MAX_CONCURRENT_STREAMS: self.max_concurrent_streams,
                SettingCodes.MAX_HEADER_LIST_SIZE: 65536,
            },
        )
        self.conn.initiate_connection()
        # A large connection window so clients never wait for us on uploads.
        self.conn.increment_flow_control_window(2**24)
        transport.write(self.conn.data_to_send())

    def connection_lost(self, exc: Exception | None) -> None:
        self.closed = True
        self.streams.clear()
        self.pending.clear()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except ProtocolError:
            self._flush()
            self._close()
            return
        for event in events:
            if isinstance(event, RequestReceived):
                request = H2Stream(event.headers)
                if request.malformed:
                    with contextlib.suppress(H2Error):
                        self.conn.reset_stream(event.stream_id, ErrorCodes.PROTOCOL_ERROR)
                    continue
                self.streams[event.stream_id] = request
            elif isinstance(event, DataReceived):
                stream = self.streams.get(event.stream_id)
                if stream is not None:
                    stream.body += event.data
                # Give the window back at once; bodies are small and consumed in memory.
                if event.flow_controlled_length:
                    with contextlib.suppress(H2Error):
                        self.conn.acknowledge_received_data(
                            event.flow_controlled_length, event.stream_id
                        )
            elif isinstance(event, StreamEnded):
                stream = self.streams.pop(event.stream_id, None)
                if stream is not None:
                    self.handle(event.stream_id, stream)
            elif isinstance(event, StreamReset):
                self.streams.pop(event.stream_id, None)
                self.pending.pop(event.stream_id, None)
            elif isinstance(event, WindowUpdated):
                if self.pending:
                    self._send_pending()
            elif isinstance(event, ConnectionTerminated):
                self._flush()
                self._close()
                return
        self._flush()

    def _send_allowed(self, stream_id: int, body: bytes) -> bytes:
        """Send as much of `body` as the flow-control windows allow now; returns the rest.
        Raises H2Error when the stream or connection is gone."""
        conn = self.conn
        while body:
            window = conn.local_flow_control_window(stream_id)
            if self.whole_body_frames:
                n = len(body) if window >= len(body) else 0
            else:
                n = min(len(body), window, conn.max_outbound_frame_size)
            if n <= 0:
                break
            conn.send_data(stream_id, body[:n], end_stream=n == len(body))
            body = body[n:]
        return body

    def respond_json(self, stream_id: int, answer: JsonAnswer, flush: bool) -> None:
        self.respond(
            stream_id,
            answer.status,
            answer.encoded(),
            answer.headers,
            flush,
            self.json_content_type,
        )

    def respond(
        self,
        stream_id: int,
        status: int,
        body: bytes,
        headers: dict[str, str],
        flush: bool,
        content_type: bytes = b"application/json",
    ) -> None:
        """Answer a stream: the status, a content type and length, the extra headers, and
        the body as far as the windows allow. `flush` when not inside data_received (which
        flushes once for its whole batch of answers)."""
        if self.closed:
            return
        head = [(b":status", str(status).encode())]
        if body:
            head.append((b"content-type", content_type))
        head.append((b"content-length", str(len(body)).encode()))
        head.extend((k.encode(), v.encode()) for k, v in headers.items())
        try:
            self.conn.send_headers(stream_id, head, end_stream=not body)
            if body:
                self.pending[stream_id] = body
                self._send_pending()
        except H2Error:
            self.pending.pop(stream_id, None)
            return  # stream reset or connection gone meanwhile: nothing to answer
        if flush:
            self._flush()

    def _send_body(self, stream_id: int, body: bytes) -> None:
        """Send this stream's body as far as the windows allow; the rest waits in pending."""
        rest = self._send_allowed(stream_id, body)
        if rest:
            self.pending[stream_id] = rest

    def _send_pending(self) -> None:
        """Send what the flow-control windows allow; the rest waits for a WINDOW_UPDATE."""
        for stream_id, body in list(self.pending.items()):
            try:
                body = self._send_allowed(stream_id, body)
            except H2Error:
                body = b""  # stream reset or connection gone meanwhile: drop the answer
            if body:
                self.pending[stream_id] = body
            else:
                del self.pending[stream_id]

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data and self.transport is not None and not self.closed:
            self.transport.write(data)

    def _close(self) -> None:
        if self.transport is not None:
            self.transport.close()
        self.closed = True
