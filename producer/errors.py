"""Exceptions a caller of the producer (in-process or over HTTP) can catch by kind."""

from __future__ import annotations

from typing import Any

from starlette.responses import JSONResponse


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
