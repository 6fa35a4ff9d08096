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

from collections.abc import Iterable
from urllib.parse import parse_qsl

import structlog
from starlette.routing import BaseRoute, Match, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from producer.bodies import MAX_BODY, invalid
from producer.errors import ErrorShapes, InternalError, MethodNotAllowed, PayloadTooLarge

log = structlog.get_logger("pushline.api")
NUL_RULE = "must not contain the NUL character (U+0000)"


class RouteTable:
    """Every route of the API, flat (FastAPI keeps included routers apart), to say which
    routes a path matches: for an Allow header, a parameter's name, a log line's route."""

    def __init__(self, routes: Iterable[BaseRoute]) -> None:
        self.routes = [r for r in routes if isinstance(r, Route)]

    def most_specific(self, scope: Scope) -> list[tuple[Route, Scope]]:
        """The routes whose path matches, those with the fewest parameters: a literal
        segment wins over a parameter, as OpenAPI matches concrete paths first."""
        found: list[tuple[Route, Scope]] = []
        for route in self.routes:
            match, child = route.matches(scope)
            if match is Match.FULL:  # the method's own route first
                found.insert(0, (route, child))
            elif match is Match.PARTIAL:
                found.append((route, child))
        if not found:
            return []
        fewest = min(len(r.param_convertors) for r, _ in found)
        return [(r, c) for r, c in found if len(r.param_convertors) == fewest]

    def template(self, scope: Scope) -> str:
        """The route's path template (never the path itself, which may carry an API key)."""
        matched = self.most_specific(scope)
        return matched[0][0].path if matched else "(no route)"

    def method_not_allowed(self, scope: Scope) -> MethodNotAllowed:
        methods: set[str] = set()
        for route, _ in self.most_specific(scope):
            methods |= route.methods or set()
        allow = sorted(methods)
        return MethodNotAllowed(
            f"{scope['method']} is not allowed here; allowed: {', '.join(allow)}", allow
        )

    def nul_field(self, scope: Scope) -> str:
        """The path parameter or query parameter that holds a NUL."""
        if "\x00" in scope["path"]:
            for _, child in self.most_specific(scope):
                for name, value in child.get("path_params", {}).items():
                    if "\x00" in str(value):
                        return str(name)
            return "path"
        query = scope["query_string"].decode("latin-1")
        for name, value in parse_qsl(query, keep_blank_values=True):
            if "\x00" in name or "\x00" in value:
                return name.replace("\x00", "\\0")
        return "query"


class RequestGuard:
    def __init__(self, app: ASGIApp, shapes: ErrorShapes, routes: RouteTable) -> None:
        self.app = app
        self.shapes = shapes
        self.routes = routes

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        if "\x00" in scope["path"] or b"%00" in scope["query_string"]:
            field = self.routes.nul_field(scope)
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
                route=self.routes.template(scope),
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

