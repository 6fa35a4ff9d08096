"""Exceptions a caller of the producer (in-process or over HTTP) can catch by kind."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from starlette.responses import JSONResponse
from starlette.types import Scope


class PushlineError(Exception):
    """Base of every error Pushline raises to its callers."""

    status = 500
    kind = "internal_error"

    def __init__(
        self, message: str, details: list[dict[str, str]] | None = None, code: int | None = None
    ) -> None:
        super().__init__(message)
        self.message = message
        self.details = details or []
        self.code = code  # a seed service's own error code (Backendless 5003, 5030…)


class InvalidRequest(PushlineError):
    status = 400
    kind = "invalid_request"


class Unauthorized(PushlineError):
    status = 401
    kind = "unauthorized"


class Forbidden(PushlineError):
    status = 403
    kind = "forbidden"


class NotFound(PushlineError):
    status = 404
    kind = "not_found"


class Conflict(PushlineError):
    status = 409
    kind = "conflict"


class Unavailable(PushlineError):
    """The store or the broker is down; nothing was accepted (result code 3)."""

    status = 503
    kind = "unavailable"


class MethodNotAllowed(PushlineError):
    """The path exists, the method does not; `allow` lists every method the path has."""

    status = 405
    kind = "method_not_allowed"

    def __init__(self, message: str, allow: list[str]) -> None:
        super().__init__(message)
        self.allow = allow


class PayloadTooLarge(PushlineError):
    status = 413
    kind = "payload_too_large"


class UnsupportedMediaType(PushlineError):
    status = 415
    kind = "unsupported_media_type"


class InternalError(PushlineError):
    """A fault of Pushline's own; the client's input was not the cause."""

    status = 500
    kind = "internal_error"


class TooManyRequests(PushlineError):
    """The API key went over its request quota; `retry_after_s` says when to come back."""

    status = 429
    kind = "too_many_requests"

    def __init__(self, message: str, retry_after_s: int) -> None:
        super().__init__(message)
        self.retry_after_s = retry_after_s


def error_response(
    status: int, kind: str, message: str, details: list[dict[str, str]], code: int | None = None
) -> JSONResponse:
    """An error in the native API's shape: {error, message, details[, code]}."""
    content: dict[str, Any] = {"error": kind, "message": message, "details": details}
    if code is not None:
        content["code"] = code
    return JSONResponse(status_code=status, content=content)


def native_response(exc: PushlineError) -> JSONResponse:
    return error_response(exc.status, exc.kind, exc.message, exc.details, exc.code)


ErrorShape = Callable[[PushlineError], JSONResponse]


class ErrorShapes:
    """Which surface a request belongs to, and its errors answered in that surface's shape.

    A surface owns a path by the path as the client wrote it (`raw_path`, still
    percent-encoded), so `/app%2Fid/key/messaging/x` stays Backendless's however it decodes.
    """

    def __init__(self) -> None:
        self._surfaces: list[tuple[Callable[[str], bool], ErrorShape]] = []

    def add(self, owns: Callable[[str], bool], shape: ErrorShape) -> None:
        self._surfaces.append((owns, shape))

    def shape_for(self, scope: Scope) -> ErrorShape:
        raw = scope.get("raw_path")
        path = raw.decode("latin-1") if raw else scope.get("path", "")
        for owns, shape in self._surfaces:
            if owns(path):
                return shape
        return native_response

    def respond(self, scope: Scope, exc: PushlineError) -> JSONResponse:
        answer = self.shape_for(scope)(exc)
        if isinstance(exc, TooManyRequests):
            answer.headers["Retry-After"] = str(exc.retry_after_s)
        if isinstance(exc, MethodNotAllowed):
            answer.headers["Allow"] = ", ".join(exc.allow)
        return answer
