"""The outermost ASGI layer: one request id, one access-log line and the request metrics
for every request, with no secret in any of them.

- `X-Request-Id` is taken from the caller when it is sane (≤ 128 characters of letters,
  digits and `._-`), else made; it is returned and bound to every log line the request
  causes (structlog contextvars).
- The access-log line goes through structlog with API keys in paths (Backendless puts the
  key in the URL) and secret-looking query values masked.
- An unhandled error is logged with its type, route, request id and where it happened
  (file, line, function), never its message or bound values, which can hold tokens; the
  client gets the native 500 shape.
"""

from __future__ import annotations

import re
import time
import traceback
from urllib.parse import parse_qsl, urlencode

import structlog
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from schemas.ids import uuid4_hex
from schemas.logs import SECRET_PARAM
from schemas.metrics import HTTP_LATENCY, HTTP_REQUESTS

log = structlog.get_logger("pushline.access")

_SANE_ID = re.compile(r"^[A-Za-z0-9._-]{1,128}$")
_KEY_IN_PATH = re.compile(r"pl_[A-Za-z0-9_-]+")
MASK = "***"


def request_id(given: str | None) -> str:
    return given if given and _SANE_ID.match(given) else uuid4_hex()


def masked_path(path: str, query: str = "") -> str:
    """The path and query as they may be logged."""
    path = _KEY_IN_PATH.sub("pl_" + MASK, path)
    if not query:
        return path
    pairs = parse_qsl(query, keep_blank_values=True)
    safe = [
        (k, MASK if SECRET_PARAM.search(k) else _KEY_IN_PATH.sub("pl_" + MASK, v))
        for k, v in pairs
    ]
    return f"{path}?{urlencode(safe)}"


def route_of(scope: Scope) -> str:
    """The route template, never the raw path (bounded label values, no ids or keys)."""
    route = scope.get("route")
    return str(getattr(route, "path", None) or "unmatched")


def where(exc: BaseException) -> list[str]:
    """The frames an error passed through, without values."""
    frames = traceback.extract_tb(exc.__traceback__)[-6:]
    return [f"{f.filename.rsplit('/', 1)[-1]}:{f.lineno} {f.name}" for f in frames]


class Observe:
    def __init__(self, app: ASGIApp, *, access_log: bool = True) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        rid = request_id(_header(scope, b"x-request-id"))
        status = 500
        started = False

        async def send_with_id(message: Message) -> None:
            nonlocal status, started
            if message["type"] == "http.response.start":
                status, started = message["status"], True
                headers = [*message.get("headers", []), (b"x-request-id", rid.encode())]
                message["headers"] = headers
            await send(message)

        t0 = time.perf_counter()
        structlog.contextvars.bind_contextvars(request_id=rid)
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            log.error(
                "unhandled error",
                error_type=type(exc).__name__,
                route=route_of(scope),
                method=scope["method"],
                where=where(exc),
            )
            if not started:
                await internal_error(send_with_id)
        finally:
            self._finish(scope, status, time.perf_counter() - t0)
            structlog.contextvars.unbind_contextvars("request_id")

    def _finish(self, scope: Scope, status: int, elapsed: float) -> None:
        method, route = scope["method"], route_of(scope)
        HTTP_REQUESTS.labels(method, route, str(status)).inc()
        HTTP_LATENCY.labels(method, route).observe(elapsed)
        if self.access_log:
            query = scope.get("query_string", b"").decode("latin-1")
            log.info(
                "request",
                method=method,
                path=masked_path(scope["path"], query),
                status=status,
                ms=round(elapsed * 1000, 1),
            )


def _header(scope: Scope, name: bytes) -> str | None:
    for k, v in scope.get("headers", ()):
        if k == name:
            return str(v.decode("latin-1"))
    return None


async def internal_error(send: Send) -> None:
    body = (
        b'{"error":"internal_error","message":"internal error; the log has it under this'
        b' request id","details":[]}'
    )
    await send(
        {
            "type": "http.response.start",
            "status": 500,
            "headers": [
                (b"content-type", b"application/json"),
                (b"content-length", str(len(body)).encode()),
            ],
        }
    )
    await send({"type": "http.response.body", "body": body})
