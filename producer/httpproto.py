"""uvicorn's httptools protocol, writing each response in one send.

uvicorn writes a response's status line and headers, then its body, as two transport
writes; with uvloop each is a send(2) of its own, and a push's answer is small enough to
fit in one. On a small virtual machine those two system calls were the largest single cost
of an accepted push (a fifth of the API's CPU). Here the writes one event-loop step makes
on a connection are joined and sent once, right after that step.

It also counts the open connections (producer.dispatch.Callers).
"""

from __future__ import annotations

import asyncio
from typing import Any, cast

from uvicorn.protocols.http.httptools_impl import HttpToolsProtocol

from producer.dispatch import Callers


class _JoinedWrites:
    """A transport whose writes within one loop step go out as one."""

    __slots__ = ("_transport", "_loop", "_pending")

    def __init__(self, transport: asyncio.Transport, loop: asyncio.AbstractEventLoop) -> None:
        self._transport = transport
        self._loop = loop
        self._pending: list[bytes] | None = None

    def write(self, data: bytes | bytearray | memoryview) -> None:
        if self._pending is None:
            self._pending = [bytes(data)]
            self._loop.call_soon(self.flush)
        else:
            self._pending.append(bytes(data))

    def flush(self) -> None:
        pending, self._pending = self._pending, None
        if pending and not self._transport.is_closing():
            self._transport.write(b"".join(pending))

    def close(self) -> None:
        self.flush()
        self._transport.close()

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)


class JoinedWritesProtocol(HttpToolsProtocol):
    """`uvicorn --http producer.httpproto:JoinedWritesProtocol`. It also counts the open
    connections, for the dispatcher to stop lingering once each has a push waiting."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        Callers.open += 1
        # uvloop's transports do not subclass asyncio.Transport; they have its methods.
        joined = _JoinedWrites(cast(asyncio.Transport, transport), self.loop)
        super().connection_made(cast(asyncio.Transport, joined))

    def connection_lost(self, exc: Exception | None) -> None:
        Callers.open -= 1
        super().connection_lost(exc)


HTTP_PROTOCOL = f"{__name__}:{JoinedWritesProtocol.__name__}"
