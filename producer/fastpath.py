"""POST /v1/messages for one device or one person, below FastAPI.

It is the call other services make most, and FastAPI's machinery per request (its
middleware, matching against every route, the Request, dependencies, the response model)
cost as much CPU as the push itself. This ASGI middleware answers the plain case itself:
a known key without a request quota, valid JSON, a target of one device or one person, no
idempotency key, no schedule. Anything else, or any doubt, goes on to the app unchanged
(the body replayed), so every error keeps the one shape and wording the app gives it.
"""

from __future__ import annotations

from concurrent.futures import Future
from types import SimpleNamespace

from sqlalchemy import Engine
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producer.accept import parse_push, submit_inline, wait_dispatched_async
from producer.auth import KeyResolver, credentials_from
from producer.bodies import MAX_BODY, loads
from producer.errors import PushlineError, native_response
from schemas.api import MessageAccepted
from schemas.settings import Settings
from schemas.targets import TARGET_ROLE

PATH = "/v1/messages"
ROUTE = SimpleNamespace(path=PATH)


class InlinePush:
    def __init__(self, app: ASGIApp, settings: Settings, engine: Engine) -> None:
        self.app = app
        self.settings = settings
        self.engine = engine

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope["method"] != "POST" or scope["path"] != PATH:
            await self.app(scope, receive, send)
            return
        body, complete = await _read_body(receive)
        submitted = self._submit(scope, body) if complete else None
        if submitted is None:
            await self.app(scope, _replay(body, complete, receive), send)
            return
        message_id, done = submitted
        scope["route"] = ROUTE  # what metrics and logs name this request by
        try:
            state = await wait_dispatched_async(done)
        except PushlineError as exc:  # the push could not be queued: nothing was accepted
            await native_response(exc)(scope, receive, send)
            return
        answer = MessageAccepted(id=message_id, state=state, status_url=f"{PATH}/{message_id}")
        await _json(send, 202, answer.model_dump_json().encode())

    def _submit(self, scope: Scope, body: bytes) -> tuple[str, Future[str]] | None:
        """Hand the push to the dispatcher, or None when it is not the plain case."""
        headers = Headers(scope=scope)
        if "idempotency-key" in headers:
            return None
        creds = credentials_from(headers)
        resolver: KeyResolver = scope["app"].state.keys
        try:
            who = resolver.cached(creds.key, creds.alias)
            if who is None or who.requests_per_minute or who.operator:
                return None  # the routed path counts the quota, or refuses the operator key
            request = parse_push(loads(body, headers.get("content-type")))
            who.require(TARGET_ROLE[request.target.type])
        except (PushlineError, ValueError, TypeError, KeyError):
            return None  # the app answers it, with the same rules (producer.bodies.loads)
        return submit_inline(who.app_id, request, settings=self.settings, engine=self.engine)


async def _read_body(receive: Receive) -> tuple[bytes, bool]:
    """The body read so far, and whether it is whole: reading stops past MAX_BODY or when
    the client went away (the app then reads the rest, or the disconnect, itself)."""
    chunks: list[bytes] = []
    size = 0
    while size <= MAX_BODY:
        message = await receive()
        if message["type"] != "http.request":
            break
        chunk = message.get("body", b"")
        chunks.append(chunk)
        size += len(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks), True
    return b"".join(chunks), False


def _replay(body: bytes, complete: bool, receive: Receive) -> Receive:
    """A receive that hands the app the body already read, then the client's own."""
    sent = False

    async def again() -> Message:
        nonlocal sent
        if not sent:
            sent = True
            return {"type": "http.request", "body": body, "more_body": not complete}
        return await receive()

    return again


async def _json(send: Send, status: int, payload: bytes) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
