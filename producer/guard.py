"""The API's outermost layer: what no route should have to think about.

- A NUL character in the path or the query is refused with a 400 naming the parameter
  (PostgreSQL stores no NUL, and an id or a name with one can match nothing anyway).
- A body declared larger than MAX_BODY is refused with a 413 before it is read.
- An error that escaped every handler is answered 500 in the surface's shape and logged by
  its type and route only: its text may hold what the client sent or a bound value
  (a device token in a unique-key violation), so it never reaches a log line or a client.
Every answer is in the shape of the surface the path belongs to (`ErrorShapes`). The happy
path costs two substring checks and a header lookup.
"""

from __future__ import annotations

from urllib.parse import parse_qsl

import structlog
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producer.bodies import MAX_BODY, invalid
from producer.errors import ErrorShapes, InternalError, MethodNotAllowed, PayloadTooLarge

log = structlog.get_logger("pushline.api")
NUL_RULE = "must not contain the NUL character (U+0000)"


class RequestGuard:
    def __init__(self, app: ASGIApp, shapes: ErrorShapes) -> None:
        self.app = app
        self.shapes = shapes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            field = _nul_field(scope)
            await self.shapes.respond(scope, invalid(field, NUL_RULE))(scope, receive, send)
            return
        length = _content_length(scope)
        if length is not None and length > MAX_BODY:
            exc = PayloadTooLarge(
                f"the body is larger than {MAX_BODY} bytes",
                [{"field": "body", "rule": f"at most {MAX_BODY} bytes"}],
            )
            await self.shapes.respond(scope, exc)(scope, receive, send)
            return
        started = False

        async def tracked(message: Message) -> None:
            nonlocal started
            if message["type"] == "http.response.start":
                started = True
            await send(message)

        try:
            await self.app(scope, receive, tracked)
        except Exception as exc:
            log.error(
                "unhandled error",
                error_type=f"{type(exc).__module__}.{type(exc).__qualname__}",
                method=scope["method"],
                route=route_template(scope),
            )
            if started:  # the answer is on its way: all that is left is to cut it short
                raise RuntimeError("response aborted after an unhandled error") from None
            answer = self.shapes.respond(scope, InternalError("internal error"))
            await answer(scope, receive, send)


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name == b"content-length":
            return int(value) if value.isdigit() else None
    return None


def _most_specific(scope: Scope) -> list[tuple[Route, Scope]]:
    """The routes whose path matches, fewest parameters first kept: a literal segment wins
    over a parameter, as OpenAPI matches concrete paths before templated ones."""
    found: list[tuple[Route, Scope]] = []
    routes: list[BaseRoute] = scope["app"].router.routes
    for route in routes:
        if not isinstance(route, Route):
            continue
        match, child = route.matches(scope)
        if match is not Match.NONE:
            found.append((route, child))
    if not found:
        return []
    fewest = min(len(r.param_convertors) for r, _ in found)
    return [(r, c) for r, c in found if len(r.param_convertors) == fewest]


def route_template(scope: Scope) -> str:
    """The route's path template (never the path itself, which may carry an API key)."""
    route = scope.get("route")
    if isinstance(route, Route):
        return route.path
    matched = _most_specific(scope)
    return matched[0][0].path if matched else "(no route)"


def allowed_methods(scope: Scope) -> list[str]:
    methods: set[str] = set()
    for route, _ in _most_specific(scope):
        methods |= route.methods or set()
    return sorted(methods)


def method_not_allowed(scope: Scope) -> MethodNotAllowed:
    allow = allowed_methods(scope)
    return MethodNotAllowed(
        f"{scope['method']} is not allowed here; allowed: {', '.join(allow)}", allow
    )


def _nul_field(scope: Scope) -> str:
    """The path parameter or query parameter that holds a NUL."""
    if "\x00" in scope["path"]:
        for _, child in _most_specific(scope):
            for name, value in child.get("path_params", {}).items():
                if "\x00" in str(value):
                    return str(name)
        return "path"
    for name, value in parse_qsl(scope["query_string"].decode("latin-1"), keep_blank_values=True):
        if "\x00" in name or "\x00" in value:
            return name.replace("\x00", "\\0")
    return "query"
