"""One OAuth 2.0 access token per app, shared by every concurrent send (FCM, Push Kit).

A token near its end is replaced in the background while sends go on with it; an expired
or refused one is minted once for all the sends waiting on it.
"""

from __future__ import annotations

import asyncio
import time


class SharedToken:
    """Subclasses say how to mint: `_mint()` returns (token, time.time() it expires)."""

    def __init__(self, margin_s: float) -> None:
        self._token: str | None = None
        self._expires_at = 0.0  # time.time() seconds
        self._margin = margin_s
        self._refreshing: asyncio.Task[str] | None = None
        self.minted = 0

    async def get(self) -> str:
        """A valid token: the current one, or the one being minted for everybody."""
        now = time.time()
        if self._token is not None and now < self._expires_at:
            if now > self._expires_at - self._margin and self._refreshing is None:
                self._start_refresh()  # off the hot path: this send keeps the current one
            return self._token
        return await asyncio.shield(self._start_refresh())

    def invalidate(self, token: str) -> None:
        """The provider refused `token`: mint another on the next `get` (once, however many
        sends saw it refused)."""
        if token == self._token:
            self._token, self._expires_at = None, 0.0

    async def _mint(self) -> tuple[str, float]:
        raise NotImplementedError

    def _start_refresh(self) -> asyncio.Task[str]:
        if self._refreshing is None:
            task = asyncio.get_running_loop().create_task(self._refresh())
            task.add_done_callback(self._refreshed)
            self._refreshing = task
        return self._refreshing

    def _refreshed(self, task: asyncio.Task[str]) -> None:
        self._refreshing = None
        if not task.cancelled():
            task.exception()  # retrieved here; every waiter gets it through its own await

    async def _refresh(self) -> str:
        token, expires_at = await self._mint()
        self._token, self._expires_at = token, expires_at
        self.minted += 1
        return token
