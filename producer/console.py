"""The operator console: /console (a static page, read-only) and the JSON it reads under
/v1/console, for admin keys only. Every answer comes from the functions the API itself
answers with (producer.status, producer.messages, producer.trace, producer.schedules,
producer.telemetry); an operator key sees every app, an app's admin key its own.
"""

from __future__ import annotations

from typing import Annotated, Any

from fastapi import APIRouter, FastAPI, Query
from fastapi.responses import HTMLResponse
from redis.exceptions import RedisError
from sqlalchemy import Engine

from producer.auth import AdminDep, Caller
from producer.docs import STATIC_DIR
from producer.messages import list_messages
from producer.schedules import upcoming_schedules
from producer.status import get_delivery, list_deliveries, message_status
from producer.telemetry import last_hour, queue_depths
from producer.trace import trace
from schemas.api import ErrorBody, ScheduleOut
from schemas.console import (
    ConsoleDelivery,
    ConsoleMessage,
    ConsoleMessageDetail,
    ConsoleMessages,
    ConsoleOverview,
    StoryEvent,
)
from schemas.settings import Settings

ERRORS: dict[int | str, dict[str, Any]] = {s: {"model": ErrorBody} for s in (400, 401, 403, 404)}
PAGE = STATIC_DIR / "console" / "index.html"


def scope(who: Caller) -> str | None:
    """None (every app) for an operator key; the app's id for an app's admin key."""
    return None if who.operator else who.app_id


def console_router(engine: Engine, settings: Settings) -> APIRouter:
    r = APIRouter(prefix="/v1/console", tags=["console (admin)"], responses=ERRORS)

    @r.get("/overview", response_model=ConsoleOverview)
    def overview(who: AdminDep) -> ConsoleOverview:
        """The last hour per minute: QUEUED Deliveries per lane, Deliveries sent; and the
        tasks waiting in each queue now."""
        hour = last_hour(engine, scope(who))
        try:
            queues: dict[str, int | None] = dict(queue_depths(settings))
        except (RedisError, OSError):  # Redis down: the store's figures still help
            queues = {}
        return ConsoleOverview(
            minutes=hour.minutes, queued=hour.queued, sent=hour.sent, queues=queues
        )

    @r.get("/messages", response_model=ConsoleMessages)
    def messages(
        who: AdminDep,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
    ) -> ConsoleMessages:
        """Recent Messages, newest first, each with its counts by status and code."""
        page = list_messages(engine, scope(who), cursor=cursor, limit=limit)
        items = [
            ConsoleMessage(
                **message_status(engine, scope(who), m.id).model_dump(),
                lane=m.lane,
                target_type=m.target_type,
            )
            for m in page.items
        ]
        return ConsoleMessages(items=items, next_cursor=page.next_cursor)

    @r.get("/messages/{message_id}", response_model=ConsoleMessageDetail)
    def message(
        message_id: str,
        who: AdminDep,
        status: str | None = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> ConsoleMessageDetail:
        """A Message's counts and a page of its Deliveries."""
        return ConsoleMessageDetail(
            message=message_status(engine, scope(who), message_id),
            deliveries=list_deliveries(
                engine, scope(who), message_id, status=status, cursor=cursor, limit=limit
            ),
        )

    @r.get("/deliveries/{delivery_id}", response_model=ConsoleDelivery)
    def delivery(delivery_id: str, who: AdminDep) -> ConsoleDelivery:
        """A Delivery with its attempts and its story (as `pushline trace` tells it)."""
        found = get_delivery(engine, scope(who), delivery_id)
        story = [StoryEvent(**vars(e)) for e in trace(engine, delivery_id, scope(who))]
        return ConsoleDelivery(delivery=found, story=story)

    @r.get("/schedules", response_model=list[ScheduleOut])
    def schedules(
        who: AdminDep, limit: Annotated[int, Query(ge=1, le=200)] = 50
    ) -> list[ScheduleOut]:
        """Schedules still to run (scheduled or paused), the next run first."""
        return upcoming_schedules(engine, scope(who), limit)

    return r


def mount_console(api: FastAPI, engine: Engine, settings: Settings) -> None:
    api.include_router(console_router(engine, settings))

    # The page is the same for everyone: signing in happens in it, with an admin key.
    @api.get("/console", include_in_schema=False)
    def console_page() -> HTMLResponse:
        return HTMLResponse(PAGE.read_text())
