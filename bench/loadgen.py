"""A lean HTTP/1.1 load generator for the benchmarks: keep-alive connections on asyncio.

The load generator shares the machine's two cores with what it measures, so it must cost
as little as possible per request: a request is one pre-rendered byte string and a
response is parsed only as far as status line, Content-Length and body. Closed loop
(`closed_loop`: C requests always in flight) or open loop (`open_loop`: requests start at a
fixed offered rate whatever the answers do, so queueing shows up in the latencies).
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Sequence
from dataclasses import dataclass


@dataclass(slots=True)
class Answer:
    index: int
    status: int
    body: bytes
    started: float  # time.time() when the request was written
    answered: float  # time.time() when its answer was read


class Connection:
    def __init__(self, host: str, port: int) -> None:
        self.host, self.port = host, port
        self.reader: asyncio.StreamReader | None = None
        self.writer: asyncio.StreamWriter | None = None

    async def request(self, raw: bytes) -> tuple[int, bytes]:
        if self.writer is None:
            self.reader, self.writer = await asyncio.open_connection(self.host, self.port)
        assert self.reader is not None
        self.writer.write(raw)
        head = await self.reader.readuntil(b"\r\n\r\n")
        status = int(head[9:12])
        length = 0
        for line in head.split(b"\r\n")[1:]:
            if line[:15].lower() == b"content-length:":
                length = int(line[15:])
        body = await self.reader.readexactly(length) if length else b""
        return status, body

    def close(self) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None


def render_post(host: str, path: str, headers: dict[str, str], body: bytes) -> bytes:
    lines = [f"POST {path} HTTP/1.1", f"Host: {host}", f"Content-Length: {len(body)}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + body


async def _one(conn: Connection, i: int, raw: bytes, out: list[Answer | None]) -> None:
    started = time.time()
    try:
        status, body = await conn.request(raw)
    except (OSError, asyncio.IncompleteReadError) as exc:
        conn.close()
        status, body = 0, str(exc).encode()
    out[i] = Answer(i, status, body, started, time.time())


async def closed_loop(
    host: str, port: int, requests: Sequence[bytes], concurrency: int
) -> list[Answer | None]:
    """Every request once, `concurrency` in flight at any time."""
    out: list[Answer | None] = [None] * len(requests)
    it = iter(range(len(requests)))

    async def lane() -> None:
        conn = Connection(host, port)
        try:
            for i in it:
                await _one(conn, i, requests[i], out)
        finally:
            conn.close()

    await asyncio.gather(*(lane() for _ in range(concurrency)))
    return out


TICK_S = 0.004


async def open_loop(
    host: str,
    port: int,
    make: Callable[[int], bytes],
    rate: float,
    duration_s: float,
    connections: int = 128,
) -> list[Answer | None]:
    """Request i is due at start + i/rate for `duration_s`; a request that finds no idle
    connection waits for one (that wait counts in its answer latency).

    The generator wakes once per TICK_S and starts every request due by then, rather than
    once per request: a timer wake-up per request cost it three times the CPU of a
    closed loop, taken from the two cores it shares with what it measures. A request's
    latency still counts from when it was due, so the tick's lateness (under 5 ms) is in
    the figures, not hidden."""
    n = int(rate * duration_s)
    out: list[Answer | None] = [None] * n
    idle: asyncio.Queue[Connection] = asyncio.Queue()
    for _ in range(connections):
        idle.put_nowait(Connection(host, port))
    start = time.monotonic()
    wall = time.time()
    tasks = []

    async def fire(i: int, due: float) -> None:
        conn = await idle.get()
        try:
            await _one(conn, i, make(i), out)
            answer = out[i]
            if answer is not None:
                answer.started = due  # latency counts from when it was due
        finally:
            idle.put_nowait(conn)

    for i in range(n):
        delay = start + i / rate - time.monotonic()
        if delay > 0:
            await asyncio.sleep(delay + TICK_S)  # then start every request due by now
        tasks.append(asyncio.ensure_future(fire(i, wall + i / rate)))
    await asyncio.gather(*tasks)
    while not idle.empty():
        idle.get_nowait().close()
    return out
