"""POST /v1/messages for one device or one person, in front of FastAPI.

It is the call other services make most, and FastAPI's machinery per request (its
middleware stack, matching against every route, the Request, dependencies, the response
model) cost more CPU than the push itself. The app hands this request here before any of
it (producer/api.py: PushlineAPI), and the plain case is answered here: a known key
without a request quota, valid JSON under the guard's rules (producer.bodies.loads), a
target of one device or one person, no idempotency key, no schedule, no query string.
Anything else, or any doubt, goes on to the app unchanged (the body replayed), so every
error keeps the one shape and wording the app gives it.

What the outer layers give every request is given here too: an `X-Request-Id`, the
request metrics, and one log line, the accept line, which carries the access-log fields.
"""

from __future__ import annotations

import time

import structlog
from sqlalchemy import Engine
from starlette.datastructures import Headers
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producer.accept import Inline, parse_checked, submit_inline, wait_dispatched_async
from producer.auth import KeyResolver, credentials_from
from producer.bodies import MAX_BODY, loads
from producer.errors import PushlineError, native_response
from producer.observe import internal_error, request_id, where
from schemas.api import MessageAccepted
from schemas.metrics import HTTP_LATENCY, HTTP_REQUESTS
from schemas.settings import Settings
from schemas.targets import TARGET_ROLE

PATH = "/v1/messages"
log = structlog.get_logger("pushline.accept")


class InlinePush:
    """`app` is the whole application behind it: what this does not answer goes there."""

    def __init__(self, app: ASGIApp, settings: Settings, engine: Engine) -> None:
        self.app = app
        self.settings = settings
        self.engine = engine
        self._requests = HTTP_REQUESTS.labels("POST", PATH, "202")
        self._latency = HTTP_LATENCY.labels("POST", PATH)

    @staticmethod
    def wants(scope: Scope) -> bool:
        return (
            scope["type"] == "http"
            and scope["method"] == "POST"
            and scope["path"] == PATH
            and not scope["query_string"]
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        t0 = time.perf_counter()
        headers = Headers(scope=scope)
        body, complete = await _read_body(receive, _length(headers))
        submitted = self._submit(scope, headers, body) if complete else None
        if submitted is None:
            await self.app(scope, _replay(body, complete, receive), send)
            return
        (message_id, done, lane), app_id, kind = submitted
        rid = request_id(headers.get("x-request-id"))
        try:
            state = await wait_dispatched_async(done)
        except PushlineError as exc:  # the push could not be queued: nothing was accepted
            await native_response(exc)(scope, receive, _with_id(send, rid))
            self._finish(rid, t0, exc.status, message_id, app_id, kind, lane, None)
            return
        except Exception as exc:
            log.error("unhandled error", request_id=rid, route=PATH, where=where(exc))
            await internal_error(_with_id(send, rid))
            self._finish(rid, t0, 500, message_id, app_id, kind, lane, None)
            return
        answer = MessageAccepted(id=message_id, state=state, status_url=f"{PATH}/{message_id}")
        await _json(send, 202, answer.model_dump_json().encode(), rid)
        self._finish(rid, t0, 202, message_id, app_id, kind, lane, state)

    def _submit(
        self, scope: Scope, headers: Headers, body: bytes
    ) -> tuple[Inline, str, str] | None:
        """Hand the push to the dispatcher, or None when it is not the plain case."""
        if "idempotency-key" in headers:
            return None
        creds = credentials_from(headers)
        resolver: KeyResolver = scope["app"].state.keys
        try:
            who = resolver.cached(creds.key, creds.alias)
            if who is None or who.requests_per_minute or who.operator:
                return None  # the routed path counts the quota, or refuses the operator key
            checked = parse_checked(loads(body, headers.get("content-type")))
            request = checked.request
            who.require(TARGET_ROLE[request.target.type])
        except (PushlineError, ValueError, TypeError, KeyError):
            return None  # the app answers it, with the same rules (producer.bodies.loads)
        got = submit_inline(
            who.app_id,
            request,
            settings=self.settings,
            engine=self.engine,
            quiet=True,
            stored_as=(checked.target, checked.payload),
        )
        return None if got is None else (got, who.app_id, request.target.type)

    def _finish(
        self,
        rid: str,
        t0: float,
        status: int,
        message_id: str,
        app_id: str,
        kind: str,
        lane: str,
        state: str | None,
    ) -> None:
        """The request's metrics and its one line: the accept line when it was accepted."""
        elapsed = time.perf_counter() - t0
        self._latency.observe(elapsed)
        if status == 202:
            self._requests.inc()
        else:
            HTTP_REQUESTS.labels("POST", PATH, str(status)).inc()
        fields = dict(
            request_id=rid, method="POST", path=PATH, status=status, ms=round(elapsed * 1000, 1)
        )
        if state is None:
            log.warning("push not accepted", **fields)
            return
        log.info(
            "push accepted",
            **fields,
            message=message_id,
            app=app_id,
            target=kind,
            lane=lane,
            state=state,
        )


def _length(headers: Headers) -> int | None:
    value = headers.get("content-length")
    return int(value) if value is not None and value.isdigit() else None


async def _read_body(receive: Receive, length: int | None) -> tuple[bytes, bool]:
    """The body read so far, and whether it is whole: reading stops past MAX_BODY or when
    the client went away (the app then reads the rest, or the disconnect, itself). A body
    announced larger than MAX_BODY is not read at all: the guard answers it."""
    chunks: list[bytes] = []
    size = 0
    if length is not None and length > MAX_BODY:
        return b"", False
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


def _with_id(send: Send, rid: str) -> Send:
    async def sending(message: Message) -> None:
        if message["type"] == "http.response.start":
            message["headers"] = [*message.get("headers", []), (b"x-request-id", rid.encode())]
        await send(message)

    return sending


async def _json(send: Send, status: int, payload: bytes, rid: str) -> None:
    await send(
        {
            "type": "http.response.start",
            "status": status,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(payload)).encode()),
                (b"x-request-id", rid.encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": payload})
