"""A lean HTTP/2 client for sending to push services (Web Push).

httpx sends each request through httpcore's HTTP/2 connection, anyio's TLS stream and a
cancel scope: two TLS writes and two system calls per request, a Huffman-coded header
block, a lock and a task lookup per step. For a worker that sends thousands of small POSTs
to one origin that was more than half of its CPU per notification. Here one asyncio
protocol per origin holds one HTTP/2 connection on the process loop:

- a request is a stream: HEADERS, then DATA within the peer's flow-control windows;
- the frames of one loop step leave in one write after it (as worker/apns.py does);
- values new on every request (`:path`, `content-length`) skip HPACK's table and Huffman
  coding (LeanEncoder); the rest, the VAPID token included, is indexed once;
- streams wait for a free slot under the peer's SETTINGS_MAX_CONCURRENT_STREAMS;
- GOAWAY, a reset or a lost connection fails the streams it took (ConnectionError) and the
  next request opens a new connection.

Only for origins reached directly that offer HTTP/2 by ALPN (every browser vendor's push
service does); `H2Pool.post` raises NotLean for the others, and the caller sends those
over httpx (which also honours HTTPS_PROXY, as the senders always have).
"""

from __future__ import annotations

import asyncio
import contextlib
import ssl
from dataclasses import dataclass, field
from typing import cast
from urllib.parse import urlsplit
from urllib.request import getproxies, proxy_bypass

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
from h2.utilities import SizeLimitDict
from hpack import Encoder
from hpack.hpack import INDEX_NONE
from hpack.table import HeaderTable


class LeanEncoder(Encoder):
    """HPACK where the header values new on every request are sent as they are.

    hpack Huffman-codes each value in Python and adds it to the dynamic table, which it
    then searches entry by entry for every later header, while such entries push the ones
    that do repeat out of it. Sent as literals without indexing or Huffman coding, values
    in ONCE cost a few bytes more on the wire and a fraction of the CPU.
    """

    ONCE: frozenset[bytes] = frozenset({b":path", b"content-length"})
    _STATIC = {
        name: index + 1
        for index, (name, _) in reversed(list(enumerate(HeaderTable.STATIC_TABLE)))
    }

    def add(self, to_add: tuple[bytes, bytes], sensitive: bool, huffman: bool = False) -> bytes:
        name, value = to_add
        if name not in self.ONCE:
            return super().add(to_add, sensitive, huffman)
        index = self._STATIC.get(name)
        if index is None:
            return self._encode_literal(name, value, INDEX_NONE, False)
        return self._encode_indexed_literal(index, value, INDEX_NONE, False)


class NotLean(Exception):
    """Not for this client: a plain-HTTP URL, an origin that did not choose HTTP/2 by ALPN,
    or one the process's proxy settings (HTTPS_PROXY, NO_PROXY) send through a proxy.
    The caller sends it over httpx, which handles all three."""


@dataclass
class Reply:
    status: int
    headers: dict[str, str] = field(default_factory=dict)
    body: bytes = b""

    @property
    def text(self) -> str:
        return self.body.decode("utf-8", "replace")


@dataclass
class _Stream:
    future: asyncio.Future[Reply]
    status: int = 0
    headers: dict[str, str] = field(default_factory=dict)
    body: bytearray = field(default_factory=bytearray)


class H2ClientProtocol(asyncio.Protocol):
    """One HTTP/2 connection to one origin; requests are coroutines on its loop."""

    CLOSED_STREAMS_KEPT = 1024  # h2 remembers up to 65,536 closed streams (~6 MB) otherwise

    def __init__(self, authority: str) -> None:
        self.authority = authority.encode()
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_outbound_headers=False,  # we build them: lower-case and valid
            normalize_outbound_headers=False,
            # The push service's answers: h2's per-header checks cost more than the rest
            # of reading them and guard against nothing a push service sends.
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
        )
        self.conn = h2.connection.H2Connection(config=config)
        self.conn.encoder = LeanEncoder()
        self.conn._closed_streams = SizeLimitDict(size_limit=self.CLOSED_STREAMS_KEPT)
        self.transport: asyncio.Transport | None = None
        self.usable = True  # False after GOAWAY or once closed: open a new connection
        self._streams: dict[int, _Stream] = {}
        self._changed = asyncio.Event()  # windows or slots may have opened
        self._flush_due = False

    # --- asyncio.Protocol ---------------------------------------------------------------

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.transport = cast(asyncio.Transport, transport)  # uvloop's is not a subclass
        self.conn.initiate_connection()
        self.flush()

    def data_received(self, data: bytes) -> None:
        try:
            events = self.conn.receive_data(data)
        except h2.exceptions.ProtocolError as exc:
            self._fail_all(ConnectionError(f"HTTP/2 protocol error: {exc}"))
            if self.transport is not None:
                self.transport.close()
            return
        for event in events:
            self._on(event)
        self.flush()

    def connection_lost(self, exc: Exception | None) -> None:
        self.transport = None
        self._fail_all(ConnectionError(f"connection lost: {exc or 'closed by the peer'}"))

    # --- events -------------------------------------------------------------------------

    def _on(self, event: h2.events.Event) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                for name, value in event.headers:
                    stream.headers[name.decode("latin-1")] = value.decode("latin-1")
                stream.status = int(stream.headers.get(":status", "0"))
        elif isinstance(event, h2.events.DataReceived):
            # Every body is given back to flow control, kept or not (an error body
            # never acknowledged would stall the connection after 64 KiB).
            self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
            stream = self._streams.get(event.stream_id)
            if stream is not None:
                stream.body += event.data
        elif isinstance(event, h2.events.StreamEnded):
            self._end(event.stream_id)
        elif isinstance(event, h2.events.StreamReset):
            self._fail(event.stream_id, ConnectionError(f"stream reset ({event.error_code!r})"))
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.usable = False
            gone = ConnectionError(f"GOAWAY ({event.error_code!r})")
            for stream_id in [s for s in self._streams if s > (event.last_stream_id or 0)]:
                self._fail(stream_id, gone)
        self._changed.set()  # settings, window updates and ended streams free room

    def _end(self, stream_id: int) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None and not stream.future.done():
            headers = {k: v for k, v in stream.headers.items() if not k.startswith(":")}
            stream.future.set_result(Reply(stream.status, headers, bytes(stream.body)))

    def _fail(self, stream_id: int, exc: Exception) -> None:
        stream = self._streams.pop(stream_id, None)
        if stream is not None and not stream.future.done():
            stream.future.set_exception(exc)

    def _fail_all(self, exc: Exception) -> None:
        self.usable = False
        for stream_id in list(self._streams):
            self._fail(stream_id, exc)
        self._changed.set()

    # --- sending ------------------------------------------------------------------------

    def flush(self) -> None:
        """Write what h2 has to send once, after this loop step."""
        if not self._flush_due:
            self._flush_due = True
            asyncio.get_running_loop().call_soon(self._flush_step)

    def _flush_step(self) -> None:
        self._flush_due = False
        data = self.conn.data_to_send()
        if data and self.transport is not None:
            self.transport.write(data)

    async def request(self, path: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Reply:
        """POST `body` to `path`; raises ConnectionError when the connection cannot carry it."""
        if not self.usable or self.transport is None:
            raise ConnectionError("the connection is closed")
        while len(self._streams) >= self.conn.remote_settings.max_concurrent_streams:
            await self._wait_for_room()
        try:
            stream_id = self.conn.get_next_available_stream_id()
        except h2.exceptions.NoAvailableStreamIDError:
            self.usable = False
            raise ConnectionError("the connection has used up its stream ids") from None
        stream = _Stream(asyncio.get_running_loop().create_future())
        self._streams[stream_id] = stream
        head = [
            (b":method", b"POST"),
            (b":scheme", b"https"),
            (b":authority", self.authority),
            (b":path", path.encode()),
            *((name.lower(), value) for name, value in headers),  # HTTP/2 names are lower-case
            (b"content-length", str(len(body)).encode()),
        ]
        try:
            self.conn.send_headers(stream_id, head, end_stream=not body)
            await self._send_body(stream_id, body)
            self.flush()
            return await stream.future
        except BaseException:
            self._abandon(stream_id)  # a timeout or cancellation: free the stream
            raise

    async def _send_body(self, stream_id: int, body: bytes) -> None:
        view = memoryview(body)
        while view:
            window = min(
                self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size
            )
            if window <= 0:
                self.flush()
                await self._wait_for_room()
                continue
            piece, view = view[:window], view[window:]
            self.conn.send_data(stream_id, piece.tobytes(), end_stream=not view)

    async def _wait_for_room(self) -> None:
        if not self.usable:
            raise ConnectionError("the connection is closing")
        self._changed.clear()
        await self._changed.wait()
        if not self.usable:
            raise ConnectionError("the connection is closing")

    def _abandon(self, stream_id: int) -> None:
        if self._streams.pop(stream_id, None) is None:
            return
        self._changed.set()  # a slot is free
        with contextlib.suppress(h2.exceptions.H2Error):  # already closed on h2's side
            self.conn.reset_stream(stream_id, h2.errors.ErrorCodes.CANCEL)
        self.flush()

    def close(self) -> None:
        if self.transport is not None:
            self.transport.close()


def tls_context(ca_file: str | None) -> ssl.SSLContext:
    """The system's trust store, or only `ca_file` (the simulators' CA) when given."""
    return ssl.create_default_context(cafile=ca_file) if ca_file else ssl.create_default_context()


class H2Pool:
    """One HTTP/2 connection per origin, opened on first use and again after it ends."""

    def __init__(self, context: ssl.SSLContext, connect_timeout: float) -> None:
        context.set_alpn_protocols(["h2"])
        self.context = context
        self.connect_timeout = connect_timeout
        self._conns: dict[tuple[str, int], H2ClientProtocol] = {}
        self._opening: dict[tuple[str, int], asyncio.Lock] = {}
        self.h1_origins: set[tuple[str, int]] = set()  # answered without HTTP/2
        self._retired: set[H2ClientProtocol] = set()  # replaced, possibly finishing streams
        self._proxy = bool(getproxies().get("https"))  # read once, as httpx's client does
        self._bypass: dict[str, bool] = {}

    async def post(self, url: str, headers: list[tuple[bytes, bytes]], body: bytes) -> Reply:
        parts = urlsplit(url)
        host, port = parts.hostname or "", parts.port or 443
        if parts.scheme != "https" or (host, port) in self.h1_origins or self._proxied(host):
            raise NotLean(url)
        conn = await self._connection(host, port, parts.netloc)
        path = parts.path or "/"
        if parts.query:
            path = f"{path}?{parts.query}"
        return await conn.request(path, headers, body)

    def _proxied(self, host: str) -> bool:
        if not self._proxy:
            return False
        bypass = self._bypass.get(host)
        if bypass is None:
            bypass = self._bypass[host] = bool(proxy_bypass(host))
        return not bypass

    async def _connection(self, host: str, port: int, authority: str) -> H2ClientProtocol:
        key = (host, port)
        conn = self._conns.get(key)
        if conn is not None and conn.usable:
            return conn
        lock = self._opening.setdefault(key, asyncio.Lock())
        async with lock:
            conn = self._conns.get(key)
            if conn is not None and conn.usable:
                return conn
            if conn is not None:
                # After GOAWAY the peer still answers the streams it took: let it finish
                # them and close the connection itself (close() ends it at the latest).
                self._retired.add(conn)
            self._retired = {c for c in self._retired if c.transport is not None}
            conn = await self._open(host, port, authority)
            self._conns[key] = conn
            return conn

    async def _open(self, host: str, port: int, authority: str) -> H2ClientProtocol:
        loop = asyncio.get_running_loop()
        async with asyncio.timeout(self.connect_timeout):
            transport, conn = await loop.create_connection(
                lambda: H2ClientProtocol(authority),
                host,
                port,
                ssl=self.context,
                server_hostname=host,
            )
        ssl_object = transport.get_extra_info("ssl_object")
        if ssl_object is None or ssl_object.selected_alpn_protocol() != "h2":
            transport.close()
            self.h1_origins.add((host, port))
            raise NotLean(f"{host}:{port}")
        return conn

    def close(self) -> None:
        for conn in [*self._conns.values(), *self._retired]:
            conn.close()
        self._conns.clear()
        self._retired.clear()
