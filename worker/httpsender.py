"""What the senders over httpx (Web Push, Push Kit) share: one HTTP/2 client per app,
built the same way, living on the process loop and so closed there."""

from __future__ import annotations

import asyncio
import ssl

import httpx

from schemas.settings import Settings

_closing: set[asyncio.Task[None]] = set()  # the loop keeps only a weak reference to a task


class LoopClient:
    client: httpx.AsyncClient
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

    async def aclose(self) -> None:
        await self.client.aclose()

    def close(self) -> None:
        """Close from the process loop (the connections live there), or drop if none runs."""
        try:
            loop = asyncio.get_running_loop()
        except RuntimeError:
            return
        task = loop.create_task(self.aclose())
        _closing.add(task)
        task.add_done_callback(_closing.discard)
