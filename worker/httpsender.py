"""What the senders over httpx (Web Push, Push Kit) share: their client lives on the
process loop, so it is closed there."""

from __future__ import annotations

import asyncio

import httpx

_closing: set[asyncio.Task[None]] = set()  # the loop keeps only a weak reference to a task


class LoopClient:
    client: httpx.AsyncClient

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
