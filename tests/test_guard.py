"""The API's outermost layer on its own: an error no handler caught is answered 500 in the
surface's shape and logged by its type and route, never by its text (which may hold a
device token or whatever the client sent)."""

from __future__ import annotations

import structlog
from sqlalchemy.exc import IntegrityError
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.testclient import TestClient

from producer.errors import ErrorShapes
from producer.guard import RequestGuard, RouteTable
from producer.surfaces import backendless

TOKEN = "a1b2c3d4e5f60718293a4b5c6d7e8f90a1b2c3d4e5f60718293a4b5c6d7e8f90"


async def fails(_: Request) -> Response:
    # What PostgreSQL's unique-key violation carries: the bound value in the message.
    raise IntegrityError("INSERT INTO registration ...", {"token": TOKEN}, Exception(TOKEN))


def _client() -> TestClient:
    shapes = ErrorShapes()
    shapes.add(backendless.owns, backendless.error_response)
    app = Starlette(
        routes=[
            Route("/v1/things/{thing_id}", fails, methods=["POST"]),
            Route("/{application_id}/{api_key}/messaging/{channel}", fails, methods=["POST"]),
        ]
    )
    app.add_middleware(RequestGuard, shapes=shapes, routes=RouteTable(app.routes))
    return TestClient(app, raise_server_exceptions=True)


def test_unhandled_error_is_a_500_in_the_native_shape_logged_by_type_and_route_only() -> None:
    with structlog.testing.capture_logs() as logs:
        answer = _client().post(f"/v1/things/{TOKEN}")
    assert answer.status_code == 500
    assert answer.json() == {"error": "internal_error", "message": "internal error", "details": []}
    assert logs == [
        {
            "event": "unhandled error",
            "log_level": "error",
            "error_type": "sqlalchemy.exc.IntegrityError",
            "method": "POST",
            "route": "/v1/things/{thing_id}",
        }
    ]
    assert TOKEN not in answer.text


def test_unhandled_error_on_a_backendless_path_is_its_message_and_code() -> None:
    with structlog.testing.capture_logs() as logs:
        answer = _client().post("/app/pl_secret-key/messaging/news")
    assert answer.status_code == 500
    assert answer.json() == {"message": "internal error", "code": 500}
    assert logs[0]["route"] == "/{application_id}/{api_key}/messaging/{channel}"
    assert "pl_secret-key" not in str(logs)
