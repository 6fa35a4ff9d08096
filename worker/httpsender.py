"""What the senders over HTTP (Web Push, Push Kit) share: per app, the lean HTTP/2 client
(worker/h2client.py) for origins that offer HTTP/2 and an httpx client for the others,
built the same way, living on the process loop and so closed there."""

from __future__ import annotations

import asyncio
import ssl

import httpx

from schemas.settings import Settings
from worker.h2client import H2Pool, NotLean, Reply, tls_context

_closing: set[asyncio.Task[None]] = set()  # the loop keeps only a weak reference to a task


class LoopClient:
    client: httpx.AsyncClient
    h2: H2Pool
    timeout: float
    concurrency: int

    def open_client(self, settings: Settings, ca_file: str | None) -> None:
        """One HTTP/2 client for the app, as many connections as sends at once, a timeout
        on every call, trusting `ca_file` instead of the system's when given."""
        self.timeout = settings.send_timeout_s
        self.concurrency = settings.send_concurrency
        verify: ssl.SSLContext | bool = True
        if ca_file:
            verify = ssl.create_default_context(cafile=ca_file)
        limits = httpx.Limits(
            max_connections=self.concurrency, max_keepalive_connections=self.concurrency
        )
        self.client = httpx.AsyncClient(
            http2=True, verify=verify, timeout=self.timeout, limits=limits
        )
        self.h2 = H2Pool(tls_context(ca_file), self.timeout)

    async def post(self, url: str, headers: dict[str, str], body: bytes) -> Reply:
        """One POST: over the lean client where the origin offers HTTP/2, else httpx.
        Raises OSError (ConnectionError, ssl errors) or httpx.HTTPError for the wire."""
        try:
            wire = [(k.encode(), v.encode()) for k, v in headers.items()]
            return await self.h2.post(url, wire, body)
        except NotLean:
            resp = await self.client.post(url, content=body, headers=headers)
            return Reply(resp.status_code, dict(resp.headers), resp.content)

    async def aclose(self) -> None:
        self.h2.close()
        await self.client.aclose()

    def close(self) -> None:
        """Close from the process loop (the connections live there), or drop if none runs."""
        self.h2.close()
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self.aclose())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
