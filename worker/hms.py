"""Sending through Huawei Push Kit (HTTP API `POST /v1/{appId}/messages:send`).

Push Kit has no Python library worth the name, and its wire is plain JSON over HTTPS, so
the wire is ours, as for FCM and Web Push: ONE `httpx.AsyncClient` per app per process on
the process loop (HTTP/2 where the server offers it), at most `send_concurrency` requests
in flight, every call bounded by `send_timeout_s`, no library retries (backoff.py owns
them).

Authentication is OAuth 2.0 client credentials: the app id and client secret are POSTed
(form-encoded) to Huawei's token endpoint for an access token that lives an hour.
`AccessTokens` keeps it until a tenth of its life (at most five minutes) is left, then
starts the next one in the background while sends go on with the current one; a send
that finds no valid token waits for the one refresh in flight, shared by every waiter.
The refresh is an async request on the process loop: nothing blocks it (no signing, no
blocking I/O), so no thread is needed. Push Kit saying the token is invalid or expired
(80200001 / 80200003) drops it and tries that send once more with a fresh one.

Push Kit answers HTTP 200 for most outcomes and puts its result code in the body (`code`:
80000000 success, 803xxxxx token problems...); `read_answer` reads it into a
ProviderAnswer whose `reason` is that code, and outcomes.py maps it through the table.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable, Hashable
from typing import Any
from urllib.parse import urlencode

import httpx
import structlog

from schemas.codes import DeliveryStatus, ResultCode
from schemas.settings import Settings
from schemas.tables import App, utcnow
from worker import store
from worker.h2client import Reply
from worker.httpsender import LoopClient
from worker.outcomes import HMS_SUCCESS, Outcome, ProviderAnswer
from worker.payloads import (
    HmsRequest,
    Payload,
    build_hms,
    hms_body,
    hms_for_device,
    hms_too_large,
    message_ttl,
)
from worker.tokens import SharedToken
from worker.webpush import retry_after_s

log = structlog.get_logger("pushline.hms")

#: Refresh at most this long before the access token expires (Huawei's live an hour).
REFRESH_MARGIN_S = 300.0
#: Push Kit's codes for an access token it does not take: mint another and try once more.
TOKEN_REFUSED = frozenset({"80200001", "80200003"})
PARTIAL_FAILURE = "80100000"

TOO_LARGE = Outcome(
    ResultCode.PAYLOAD_TOO_LARGE,
    DeliveryStatus.ERROR,
    message="payload exceeds Push Kit's 4096-byte limit; not sent",
)


FORM_HEADERS = {"content-type": "application/x-www-form-urlencoded"}
#: LoopClient.post: the token endpoint is asked over the same wire as the sends.
Post = Callable[[str, dict[str, str], bytes], Awaitable[Reply]]


class TokenRefused(Exception):
    """The token endpoint refused the app id and secret (a configuration problem)."""


class AccessTokens(SharedToken):
    """One OAuth 2.0 access token per Huawei app, shared by every concurrent send."""

    def __init__(self, post: Post, url: str, client_id: str, client_secret: str) -> None:
        super().__init__(REFRESH_MARGIN_S)
        self._post = post
        self._url = url
        self._form = urlencode(
            {
                "grant_type": "client_credentials",
                "client_id": client_id,
                "client_secret": client_secret,
            }
        ).encode()

    async def _mint(self) -> tuple[str, float]:
        reply = await self._post(self._url, FORM_HEADERS, self._form)
        token, expires_in = parse_token_answer(reply.status, reply.body)
        self._margin = min(REFRESH_MARGIN_S, expires_in / 10)
        return token, time.time() + expires_in


def parse_token_answer(status: int, content: bytes) -> tuple[str, float]:
    """(access token, seconds it lives) from the token endpoint's answer. TokenRefused when
    it refused the credentials (code 4); ValueError for a 5xx or an unreadable answer
    (no answer, code -1: tried again)."""
    try:
        body = json.loads(content)
    except ValueError:
        body = None
    if not isinstance(body, dict):
        raise ValueError(f"token endpoint answered {status} without JSON")
    token = body.get("access_token")
    if status == 200 and isinstance(token, str) and token:
        expires_in = body.get("expires_in")
        return token, float(expires_in) if isinstance(expires_in, int | float) else 3600.0
    if status >= 500:
        raise ValueError(f"token endpoint answered {status}")
    what = body.get("error_description") or body.get("error") or status
    raise TokenRefused(f"OAuth token refused: {what}")


class HmsSender(LoopClient):
    """One app's Push Kit sender for this process; build and use it on the process loop."""

    def __init__(self, app: App, settings: Settings) -> None:
        if not app.hms_app_id or not app.hms_client_secret:
            raise ValueError("the app has no Huawei app id and client secret")
        self.url = f"{settings.hms_push_url.rstrip('/')}/v1/{app.hms_app_id}/messages:send"
        self.open_client(settings, settings.hms_ca_file)
        self.tokens = AccessTokens(
            self.post, settings.hms_token_url, app.hms_app_id, app.hms_client_secret
        )
        self._slots = asyncio.Semaphore(self.concurrency)
        self._headers = {"content-type": "application/json; charset=UTF-8"}

    async def send(self, token: str, req: HmsRequest) -> ProviderAnswer:
        """One message to one device; never raises for what Push Kit or the network did."""
        body = hms_body(token, req)
        async with self._slots:
            try:
                async with asyncio.timeout(self.timeout):  # token, connection, answer: all of it
                    return await self._post(token, body)
            except TimeoutError:
                return ProviderAnswer(None, "timeout", detail=f"no answer within {self.timeout}s")

    async def _post(self, device: str, body: bytes) -> ProviderAnswer:
        answer = ProviderAnswer(None, "connection")
        for attempt in (1, 2):
            try:
                access = await self.tokens.get()
            except TokenRefused as exc:
                return ProviderAnswer(401, "80200001", detail=str(exc)[:300])
            except (httpx.HTTPError, OSError, ValueError) as exc:
                return ProviderAnswer(None, "connection", detail=f"token: {exc}"[:300])
            headers = {**self._headers, "authorization": f"Bearer {access}"}
            try:
                reply = await self.post(self.url, headers, body)
            except (httpx.HTTPError, OSError) as exc:  # ConnectionError and ssl errors too
                return ProviderAnswer(None, "connection", detail=type(exc).__name__)
            answer = read_answer(reply.status, reply.body, device, reply.headers.get("retry-after"))
            if answer.reason in TOKEN_REFUSED and attempt == 1:
                self.tokens.invalidate(access)
                continue
            return answer
        return answer


def read_answer(
    status: int, content: bytes, device: str, retry_after: str | None = None
) -> ProviderAnswer:
    """Pure: what one messages:send answer says about `device`."""
    try:
        body: Any = json.loads(content) if content else {}
    except ValueError:
        body = {}
    if not isinstance(body, dict):
        body = {}
    code = body.get("code")
    code = str(code) if code is not None else None
    msg = body.get("msg")
    ref = body.get("requestId")
    ref = str(ref)[:255] if ref is not None else None
    if status == 200 and code == PARTIAL_FAILURE and device not in illegal_tokens(msg):
        code = HMS_SUCCESS  # some of the tokens failed, not this one
    if status == 200 and code in (None, HMS_SUCCESS):
        return ProviderAnswer(200, HMS_SUCCESS, ref=ref)
    return ProviderAnswer(
        status,
        code,
        ref=ref,
        retry_after=retry_after_s(retry_after),
        detail=str(msg)[:300] if msg else None,
    )


def illegal_tokens(msg: Any) -> set[str]:
    """The tokens an 80100000 answer lists as failed: its `msg` is a JSON text with
    `illegal_tokens` (or `illegalTokens`, a list or an object of lists by cause)."""
    try:
        parsed = json.loads(msg) if isinstance(msg, str) else msg
    except ValueError:
        return set()
    if not isinstance(parsed, dict):
        return set()
    listed = parsed.get("illegal_tokens", parsed.get("illegalTokens"))
    if isinstance(listed, dict):
        return {t for v in listed.values() if isinstance(v, list) for t in v}
    return {t for t in listed if isinstance(t, str)} if isinstance(listed, list) else set()


Choose = Callable[[store.ClaimedMessage, store.ClaimedDelivery], tuple[Hashable, Payload]]
Decided = list[tuple[store.ClaimedDelivery, ProviderAnswer | Outcome]]
Send = Callable[[store.ClaimedDelivery], Awaitable[ProviderAnswer]]


def prepare_hms(
    sender: HmsSender,
    group: list[store.ClaimedDelivery],
    messages: dict[str, store.ClaimedMessage],
    choose: Choose,
    decided: Decided,
) -> tuple[list[store.ClaimedDelivery], Send]:
    """Push Kit requests, one build per distinct payload; those too large are decided here
    (code 9, no request). Returns the sendable deliveries and how to send one."""
    now = utcnow()
    built: dict[Hashable, HmsRequest] = {}
    requests: dict[str, HmsRequest] = {}
    ready: list[store.ClaimedDelivery] = []
    for c in group:
        msg = messages[c.message_id]
        choice, payload = choose(msg, c)
        req = built.get(choice)
        if req is None:
            req = built[choice] = build_hms(payload, message_ttl(payload, msg.expires_at, now))
        req = hms_for_device(req, c.id)
        if hms_too_large(c.token, req):
            decided.append((c, TOO_LARGE))
        else:
            requests[c.id] = req
            ready.append(c)

    def send(c: store.ClaimedDelivery) -> Awaitable[ProviderAnswer]:
        return sender.send(c.token, requests.pop(c.id))

    return ready, send
