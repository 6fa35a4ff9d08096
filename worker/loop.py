"""One asyncio loop per worker process, alive across Celery tasks.

Provider connections (HTTP/2 to APNs and FCM) live on this loop, so every task after the
first reuses them instead of paying a TLS handshake per task.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import threading
from collections.abc import Coroutine
from typing import Any, TypeVar

from schemas import process

T = TypeVar("T")


def _new_loop() -> asyncio.AbstractEventLoop:
    """uvloop where it is installed (uvicorn[standard] brings it): its sockets and TLS are
    C, where asyncio's selector loop and SSL protocol were a third of what sending a
    notification cost in Python."""
    try:
        import uvloop
    except ImportError:
        return asyncio.new_event_loop()
    return uvloop.new_event_loop()


class BackgroundLoop:
    def __init__(self) -> None:
        self.loop = _new_loop()
        self._thread = threading.Thread(target=self._run, name="pushline-loop", daemon=True)
        self._thread.start()

    def _run(self) -> None:
        asyncio.set_event_loop(self.loop)
        self.loop.run_forever()

    def run(self, coro: Coroutine[Any, Any, T], timeout: float | None = None) -> T:
        return self.submit(coro).result(timeout)

    def submit(self, coro: Coroutine[Any, Any, T]) -> concurrent.futures.Future[T]:
        return asyncio.run_coroutine_threadsafe(coro, self.loop)

    def stop(self) -> None:
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(timeout=5)


_loop: BackgroundLoop | None = None
_pid: int | None = None


def process_loop() -> BackgroundLoop:
    """The loop of this process (a forked child gets its own, never its parent's)."""
    global _loop, _pid
    if _loop is None or _pid != process.pid():
        _loop, _pid = BackgroundLoop(), process.pid()
    return _loop
