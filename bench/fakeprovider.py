"""The cheapest provider there can be: HTTP/2 over TLS, every request answered 200 (201).

A ceiling measured against the simulators includes what the simulators cost (they check
JWTs, tokens and payloads); against this server a client's rate is bounded by the client.
It answers APNs requests (`/3/device/…`, echoing apns-id), FCM v1 sends
(`…/messages:send`, with a message name) and Web Push messages (`/wpush/…`, 201 Created)
alike, checks nothing, and counts what it answered; `kill -USR1` makes it print the count.
A client that offers only HTTP/1.1 by ALPN (aiohttp, so pywebpush) gets keep-alive
HTTP/1.1 (h11), every request answered 201.

    python -m bench.fakeprovider --port 2197 --tls-dir .pushline/tls
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import itertools
import signal
import ssl
import sys
from pathlib import Path

import h11

from simulators import fasthpack
from simulators.certs import ensure_tls
from simulators.h2server import H2ServerProtocol, H2Stream

_names = itertools.count(1)
answered = 0


class FakeProvider(H2ServerProtocol):
    max_concurrent_streams = 1000

    def handle(self, stream_id: int, stream: H2Stream) -> None:
        global answered
        answered += 1
        if stream.path.startswith(b"/wpush/"):
            self.conn.send_headers(
                stream_id,
                [(b":status", b"201"), (b"location", b"/m/%d" % next(_names))],
                end_stream=True,
            )
            return
        if stream.path.endswith(b":send"):
            body = b'{"name":"projects/fake/messages/%d"}' % next(_names)
            self.conn.send_headers(
                stream_id, [(b":status", b"200"), (b"content-type", b"application/json")]
            )
            self.conn.send_data(stream_id, body, end_stream=True)
            return
        apns_id = stream.headers.get(b"apns-id", b"00000000-0000-0000-0000-000000000000")
        self.conn.send_headers(
            stream_id, [(b":status", b"200"), (b"apns-id", apns_id)], end_stream=True
        )


class FakeHttp1(asyncio.Protocol):
    """HTTP/1.1 with keep-alive: every complete request answered 201, no body."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        assert isinstance(transport, asyncio.Transport)
        self.transport = transport
        self.conn = h11.Connection(h11.SERVER)

    def data_received(self, data: bytes) -> None:
        global answered
        self.conn.receive_data(data)
        while True:
            try:
                event = self.conn.next_event()
            except h11.RemoteProtocolError:
                self.transport.close()
                return
            if event is h11.NEED_DATA or event is h11.PAUSED:
                break
            if isinstance(event, h11.EndOfMessage):
                answered += 1
                headers = [(b"content-length", b"0"), (b"location", b"/m/%d" % next(_names))]
                out = self.conn.send(h11.Response(status_code=201, headers=headers))
                out += self.conn.send(h11.EndOfMessage()) or b""
                self.transport.write(out or b"")
                self.conn.start_next_cycle()
            elif isinstance(event, h11.ConnectionClosed):
                self.transport.close()
                return


class ByAlpn(asyncio.Protocol):
    """Placed on each TLS connection: becomes HTTP/2 or HTTP/1.1 by what ALPN chose."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_obj = transport.get_extra_info("ssl_object")
        alpn = ssl_obj.selected_alpn_protocol() if ssl_obj is not None else None
        inner: asyncio.Protocol = FakeHttp1() if alpn != "h2" else FakeProvider()
        transport.set_protocol(inner)
        inner.connection_made(transport)


def tls_context(tls_dir: Path) -> ssl.SSLContext:
    files = ensure_tls(tls_dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(files.server_cert), str(files.server_key))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


async def serve(host: str, port: int, tls_dir: Path) -> None:
    fasthpack.install()
    loop = asyncio.get_running_loop()
    server = await loop.create_server(ByAlpn, host, port, ssl=tls_context(tls_dir))
    loop.add_signal_handler(signal.SIGUSR1, lambda: print(f"answered {answered}", flush=True))
    print(f"ready {server.sockets[0].getsockname()[1]}", flush=True)
    async with server:
        await server.serve_forever()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, default=0)
    parser.add_argument("--tls-dir", type=Path, required=True)
    args = parser.parse_args(argv)
    with contextlib.suppress(KeyboardInterrupt):
        asyncio.run(serve(args.host, args.port, args.tls_dir))
    return 0


if __name__ == "__main__":
    sys.exit(main())
