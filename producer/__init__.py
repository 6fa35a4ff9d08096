"""How work enters Pushline: the REST API, the CLI, and the functions other services call.

A Python service enqueues exactly as the API does, with nothing but `REDIS_URL` and
`DATABASE_URL` set::

    from producer import accept_push
    accepted = accept_push(app_id, {"target": {"type": "users", "usernames": ["ann"]},
                                    "payload": {"alert": {"title": "Hi"}}})

Services that go through the API use `PushlineClient`.
"""

from producer.accept import Accepted, accept_push
from producer.client import PushlineClient
from producer.errors import (
    Conflict,
    Forbidden,
    InvalidRequest,
    NotFound,
    PushlineError,
    Unauthorized,
    Unavailable,
)

__all__ = [
    "Accepted",
    "Conflict",
    "Forbidden",
    "InvalidRequest",
    "NotFound",
    "PushlineClient",
    "PushlineError",
    "Unauthorized",
    "Unavailable",
    "accept_push",
]
