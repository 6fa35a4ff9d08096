"""The REST API (native routes under /v1). OpenAPI docs at /docs."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import datetime
from typing import Annotated, Any, Literal

import structlog
from fastapi import FastAPI, Header, Query, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse, PlainTextResponse
from prometheus_client import CONTENT_TYPE_LATEST
from sqlalchemy.exc import OperationalError
from starlette.concurrency import run_in_threadpool
from starlette.exceptions import HTTPException as StarletteHTTPException
from starlette.types import Receive, Scope, Send

from producer.accept import (
    Accepted,
    accept_push,
    parse_push,
    submit_inline,
    wait_dispatched_async,
)
from producer.admin import admin_router
from producer.apps import webpush_public_key
from producer.audience import count_audience, parse_audience
from producer.auth import CallerDep, KeyResolver
from producer.bodies import json_body, json_model, read_json, validation_error
from producer.cancel import cancel_message, target_type
from producer.console import mount_console
from producer.docs import TAGS, add_security, mount_docs
from producer.engagement import report_engagement
from producer.errors import ErrorShapes, NotFound, PushlineError, Unavailable
from producer.fastpath import InlinePush
from producer.guard import RequestGuard, RouteTable
from producer.messages import list_messages, timeline
from producer.observe import Observe
from producer.openapi import complete as complete_openapi
from producer.quota import RequestQuota
from producer.registrations import (
    delete_registration,
    get_registration,
    list_registrations,
    subscribe,
    unsubscribe,
    upsert_registration,
)
from producer.revocation import Revocations
from producer.schedules import get_schedule, list_schedules, set_state
from producer.status import get_delivery, list_deliveries, message_status
from producer.surfaces import mount_surfaces
from producer.telemetry import exposition, readiness
from producer.webhooks import emit_installation
from schemas.api import (
    TARGET_ROLE,
    AudienceOut,
    AudienceRequest,
    DeliveryOut,
    DeliveryPage,
    EngagementIn,
    ErrorBody,
    MessageAccepted,
    MessagePage,
    MessageStatus,
    MessageTimeline,
    PushRequest,
    ReadyOut,
    RegistrationIn,
    RegistrationOut,
    RegistrationPage,
    ScheduleOut,
    SchedulePage,
    TopicsIn,
    WebPushPublicKey,
)
from schemas.cm import CLIENT_INSTALLED, CLIENT_UNREGISTERED, CLIENT_UPDATED
from schemas.codes import Role
from schemas.db import engine_for, upgrade
from schemas.heap import settle_heap
from schemas.logs import configure_logging
from schemas.settings import Settings, get_settings

log = structlog.get_logger("pushline.api")
ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": ErrorBody} for s in (400, 401, 403, 404, 409, 429, 503)
}


class PushlineAPI(FastAPI):
    """FastAPI with a front door for the one call made most: a plain single-device push
    is answered before FastAPI's own layers and the middleware stack (producer/fastpath.py);
    everything else, and any push it does not take, goes through them as usual."""

    front: InlinePush | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if self.front is not None and InlinePush.wants(scope):
            scope["app"] = self
            await self.front(scope, receive, send)
        else:
            await super().__call__(scope, receive, send)

    async def full_stack(self, scope: Scope, receive: Receive, send: Send) -> None:
        await super().__call__(scope, receive, send)


@asynccontextmanager
async def _started(_: FastAPI) -> AsyncIterator[None]:
    settle_heap()  # everything is imported and built by now
    yield


def create_app(settings: Settings | None = None, *, migrate: bool = True) -> FastAPI:
    settings = settings or get_settings()
    # Each API process (uvicorn spawns them) sets up its own logging: JSON off a terminal.
    configure_logging(settings.log_level, settings.log_json)
    engine = engine_for(settings.database_url)
    if migrate:
        upgrade(settings.database_url)
    api = PushlineAPI(
        lifespan=_started,
        redirect_slashes=False,  # a trailing slash is another path: 404, not a redirect
        title="Pushline",
        version="1",
        description="Self-hosted push notification delivery through APNs, FCM, Web Push and "
        "Huawei Push Kit.",
        openapi_tags=TAGS,
        docs_url=None,  # producer.docs serves /docs from the package's own assets
        redoc_url=None,
    )
    mount_docs(api)
    api.state.keys = KeyResolver(engine, Revocations(settings.redis_url, settings.redis_key_prefix))
    api.state.quota = RequestQuota(settings.redis_url, settings.redis_key_prefix)
    shapes = ErrorShapes()
    routes = RouteTable([])  # filled once every route is mounted (below)

    @api.exception_handler(PushlineError)
    async def _pushline_error(request: Request, exc: PushlineError) -> JSONResponse:
        # Each seed surface answers errors in its own service's shape.
        return shapes.respond(request.scope, exc)

    @api.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return shapes.respond(request.scope, validation_error(exc.errors()))

    @api.exception_handler(StarletteHTTPException)
    async def _http(request: Request, exc: StarletteHTTPException) -> JSONResponse:
        # Starlette's own answers (no such route, no such method): never FastAPI's
        # {"detail": …}, and a 405's Allow names every method of the path.
        if exc.status_code == 405:
            return shapes.respond(request.scope, routes.method_not_allowed(request.scope))
        if exc.status_code == 404:
            # The path is not echoed: a Backendless path carries an API key.
            err: PushlineError = NotFound("no such route: see /docs for the API's paths")
        else:
            err = PushlineError(str(exc.detail))
            err.status = exc.status_code
        return shapes.respond(request.scope, err)

    @api.exception_handler(OperationalError)
    async def _store_down(request: Request, exc: OperationalError) -> JSONResponse:
        log.error("store unavailable", error_type=type(exc.orig).__name__)
        err = Unavailable("the store is unavailable; try again shortly")
        return shapes.respond(request.scope, err)

    @api.get("/v1/health", tags=["operations"])
    def health() -> dict[str, str]:
        """Liveness: the process answers. Cheap on purpose; readiness is /v1/ready."""
        return {"status": "ok"}

    @api.get(
        "/v1/apps/{app_id}/webpush/public-key",
        response_model=WebPushPublicKey,
        tags=["registrations"],
        responses=ERRORS,
    )
    def webpush_key(app_id: str) -> WebPushPublicKey:
        """The app's VAPID public key, for `pushManager.subscribe({applicationServerKey})`.

        No API key needed: a web front end reads it before it has anything to send, and a
        public key is public (the private half never leaves Pushline).
        """
        return WebPushPublicKey(app_id=app_id, public_key=webpush_public_key(engine, app_id))

    @api.get(
        "/v1/ready",
        tags=["operations"],
        responses={503: {"model": ReadyOut, "description": "a part is not ready"}},
    )
    def ready() -> JSONResponse:
        """Readiness: the database and Redis answer, every queue has a live consumer and a
        scheduler beats; 503 names what is not ready."""
        r = readiness(settings, engine)
        body = ReadyOut(status="ok" if r.ready else "not ready", checks=r.checks)
        return JSONResponse(body.model_dump(), status_code=200 if r.ready else 503)

    @api.get("/metrics", tags=["operations"], response_class=PlainTextResponse)
    def metrics() -> PlainTextResponse:
        """Prometheus exposition: every API process's counters and the deployment's gauges."""
        return PlainTextResponse(exposition(settings, engine), media_type=CONTENT_TYPE_LATEST)

    # --- registrations -------------------------------------------------------------------
    @api.post(
        "/v1/registrations",
        response_model=RegistrationOut,
        status_code=201,
        tags=["registrations"],
        responses={
            200: {"model": RegistrationOut, "description": "Updated: it was registered before"},
            **ERRORS,
        },
        openapi_extra=json_body(RegistrationIn),
    )
    def register(
        body: Annotated[RegistrationIn, json_model(RegistrationIn)],
        who: CallerDep,
        response: Response,
    ) -> RegistrationOut:
        """Create or update a registration: one user on one device, so idempotent on
        (`username`, `device_id`), or (`username`, token) without a device id; a new one
        without `device_id` is given one (returned). Two users on one shared device are two
        registrations. Without `token` (then `provider` or `platform`) the device is
        registered without one, and pushes to it end with code 5 until it sends one.

        Tokens may be written the Microbizz way, `iOS:<token>` or `android:<token>`.
        """
        who.require(Role.ADMIN)
        reg, created = upsert_registration(engine, who.app_id, body)
        response.status_code = 201 if created else 200
        emit_installation(
            settings, engine, who.app_id, CLIENT_INSTALLED if created else CLIENT_UPDATED, reg
        )
        return reg

    @api.get(
        "/v1/registrations/{registration_id}",
        response_model=RegistrationOut,
        tags=["registrations"],
        responses=ERRORS,
    )
    def read_registration(registration_id: str, who: CallerDep) -> RegistrationOut:
        who.require(Role.REGISTRATIONS_READ)
        return get_registration(engine, who.app_id, registration_id)

    @api.get(
        "/v1/registrations",
        response_model=RegistrationPage,
        tags=["registrations"],
        responses=ERRORS,
    )
    def registrations(
        who: CallerDep,
        username: str | None = None,
        push_group: str | None = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> RegistrationPage:
        """Registrations of the app, by username or push group, in keyset pages."""
        who.require(Role.REGISTRATIONS_READ)
        rows, nxt = list_registrations(
            engine,
            who.app_id,
            username=username,
            push_group=push_group,
            cursor=cursor,
            limit=limit,
        )
        return RegistrationPage(items=rows, next_cursor=nxt)

    @api.post(
        "/v1/registrations/{registration_id}/topics",
        response_model=RegistrationOut,
        tags=["registrations"],
        responses=ERRORS,
        openapi_extra=json_body(TopicsIn),
    )
    def subscribe_topics(
        registration_id: str, body: Annotated[TopicsIn, json_model(TopicsIn)], who: CallerDep
    ) -> RegistrationOut:
        """Subscribe a registration to topics (existing subscriptions stay)."""
        who.require(Role.ADMIN)
        return subscribe(engine, who.app_id, registration_id, body.topics)

    @api.delete(
        "/v1/registrations/{registration_id}/topics/{topic}",
        response_model=RegistrationOut,
        tags=["registrations"],
        responses=ERRORS,
    )
    def unsubscribe_topic(registration_id: str, topic: str, who: CallerDep) -> RegistrationOut:
        who.require(Role.ADMIN)
        return unsubscribe(engine, who.app_id, registration_id, topic)

    @api.delete(
        "/v1/registrations/{registration_id}",
        status_code=204,
        tags=["registrations"],
        responses=ERRORS,
    )
    def unregister(registration_id: str, who: CallerDep) -> Response:
        who.require(Role.ADMIN)
        gone = get_registration(engine, who.app_id, registration_id)
        delete_registration(engine, who.app_id, registration_id)
        emit_installation(settings, engine, who.app_id, CLIENT_UNREGISTERED, gone)
        return Response(status_code=204)

    # --- messages ------------------------------------------------------------------------
    @api.post(
        "/v1/messages",
        response_model=MessageAccepted,
        status_code=202,
        tags=["push"],
        responses=ERRORS,
        openapi_extra=json_body(PushRequest),
    )
    async def push(
        request: Request,
        who: CallerDep,
        idempotency_key: Annotated[str | None, Header(max_length=255)] = None,
    ) -> MessageAccepted:
        """Push to any target: `device`, `users`, `bulk`, `application`, `topic`, `group`,
        `capability`, `os_mask` (Backendless broadcast), `device_ids` (Backendless
        singlecast) or `destinations` (Infobip, with `$and` / `$or` filters).

        Answers 202 with the Message id as soon as it is persisted and queued; with a
        `schedule`, 202 with the Schedule (`state` "scheduled") and its first run. The same
        `Idempotency-Key` (header or field) within 24 h returns the first Message.
        """
        body = await read_json(request)
        parsed = parse_push(body)
        who.require(TARGET_ROLE[parsed.target.type])
        fast = submit_inline(
            who.app_id, parsed, settings=settings, engine=engine, idempotency_key=idempotency_key
        )
        if fast is not None:  # one device or one person: no thread, no fan-out task
            accepted = Accepted(fast.id, await wait_dispatched_async(fast.done))
        else:
            accepted = await run_in_threadpool(
                accept_push,
                who.app_id,
                parsed,
                settings=settings,
                engine=engine,
                idempotency_key=idempotency_key,
            )
        return MessageAccepted(
            id=accepted.message_id,
            state=accepted.state,
            status_url=accepted.status_url,
            next_run_at=accepted.next_run_at,
            replayed=accepted.replayed,
        )

    @api.post(
        "/v1/audience",
        response_model=AudienceOut,
        tags=["push"],
        responses=ERRORS,
        openapi_extra=json_body(AudienceRequest),
    )
    async def audience(request: Request, who: CallerDep) -> AudienceOut:
        """How many active devices a target reaches now, by provider and platform, without
        sending anything. Any target `POST /v1/messages` accepts, with the same rules and
        the same role."""
        parsed = parse_audience(await read_json(request))
        who.require(TARGET_ROLE[parsed.target.type])
        return await run_in_threadpool(count_audience, engine, who.app_id, parsed)

    # --- schedules -------------------------------------------------------------------------
    @api.get("/v1/schedules", response_model=SchedulePage, tags=["schedules"], responses=ERRORS)
    def schedules(
        who: CallerDep,
        state: str | None = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> SchedulePage:
        """Schedules of the app with their next run and the Messages they produced."""
        return list_schedules(engine, who.app_id, state=state, cursor=cursor, limit=limit)

    @api.get(
        "/v1/schedules/{schedule_id}",
        response_model=ScheduleOut,
        tags=["schedules"],
        responses=ERRORS,
    )
    def read_schedule(schedule_id: str, who: CallerDep) -> ScheduleOut:
        return get_schedule(engine, who.app_id, schedule_id)

    @api.post(
        "/v1/schedules/{schedule_id}/{action}",
        response_model=ScheduleOut,
        tags=["schedules"],
        responses=ERRORS,
    )
    def steer_schedule(
        schedule_id: str, action: Literal["pause", "resume", "cancel"], who: CallerDep
    ) -> ScheduleOut:
        """Pause, resume (runs that fell due while paused are skipped) or cancel."""
        current = get_schedule(engine, who.app_id, schedule_id)
        who.require(TARGET_ROLE[str(current.target.get("type"))])
        return set_state(engine, who.app_id, schedule_id, action)

    @api.delete(
        "/v1/schedules/{schedule_id}",
        response_model=ScheduleOut,
        tags=["schedules"],
        responses=ERRORS,
    )
    def cancel_schedule(schedule_id: str, who: CallerDep) -> ScheduleOut:
        current = get_schedule(engine, who.app_id, schedule_id)
        who.require(TARGET_ROLE[str(current.target.get("type"))])
        return set_state(engine, who.app_id, schedule_id, "cancel")

    @api.get("/v1/messages", response_model=MessagePage, tags=["push"], responses=ERRORS)
    def messages(
        who: CallerDep,
        state: str | None = None,
        label: Annotated[str | None, Query(max_length=64)] = None,
        since: datetime | None = None,
        until: datetime | None = None,
        cursor: Annotated[str | None, Query(max_length=400)] = None,
        limit: Annotated[int, Query(ge=1, le=500)] = 50,
    ) -> MessagePage:
        """The app's Messages newest first, by `state`, `label` and when accepted (`since`
        inclusive, `until` exclusive), in keyset pages (`next_cursor`)."""
        return list_messages(
            engine,
            who.app_id,
            state=state,
            label=label,
            since=since,
            until=until,
            cursor=cursor,
            limit=limit,
        )

    @api.post(
        "/v1/messages/{message_id}/cancel",
        response_model=MessageStatus,
        tags=["push"],
        responses=ERRORS,
    )
    def cancel(message_id: str, who: CallerDep) -> MessageStatus:
        """Stop a Message in flight: fan-out stops, workers stop sending it within about a
        second, every Delivery not sent becomes CANCELLED (SENT stays SENT). Needs the role
        its push needed; a Message already done or failed is a 409, a cancelled one answers
        as it is."""
        who.require(TARGET_ROLE[target_type(engine, who.app_id, message_id)])
        return cancel_message(engine, settings, who.app_id, message_id)

    @api.get(
        "/v1/messages/{message_id}/timeline",
        response_model=MessageTimeline,
        tags=["push"],
        responses=ERRORS,
    )
    def message_timeline(message_id: str, who: CallerDep) -> MessageTimeline:
        """Sent, failed and cancelled Deliveries per minute, for charts."""
        return timeline(engine, who.app_id, message_id)

    @api.get(
        "/v1/messages/{message_id}",
        response_model=MessageStatus,
        tags=["push"],
        responses=ERRORS,
    )
    def read_message(message_id: str, who: CallerDep) -> MessageStatus:
        return message_status(engine, who.app_id, message_id)

    @api.get(
        "/v1/messages/{message_id}/deliveries",
        response_model=DeliveryPage,
        tags=["push"],
        responses=ERRORS,
    )
    def message_deliveries(
        message_id: str,
        who: CallerDep,
        status: str | None = None,
        cursor: str | None = None,
        limit: Annotated[int, Query(ge=1, le=1000)] = 100,
    ) -> DeliveryPage:
        return list_deliveries(
            engine, who.app_id, message_id, status=status, cursor=cursor, limit=limit
        )

    @api.get(
        "/v1/deliveries/{delivery_id}",
        response_model=DeliveryOut,
        tags=["push"],
        responses=ERRORS,
    )
    def read_delivery(delivery_id: str, who: CallerDep) -> DeliveryOut:
        return get_delivery(engine, who.app_id, delivery_id)

    @api.post(
        "/v1/deliveries/{delivery_id}/status",
        response_model=DeliveryOut,
        tags=["push"],
        responses=ERRORS,
        openapi_extra=json_body(EngagementIn),
    )
    def report_status(
        delivery_id: str, body: Annotated[EngagementIn, json_model(EngagementIn)], who: CallerDep
    ) -> DeliveryOut:
        """The app reports RECEIVED, CONSUMED or CONFIRMED; statuses never move backwards."""
        row = report_engagement(engine, who.app_id, delivery_id, body.status)
        return DeliveryOut.model_validate(row)

    # After the native routes: Starlette matches routes in order, and POST /v1/messages is
    # the call made most, so it should not be tried against every seed route first.
    api.include_router(admin_router(engine, settings))
    mount_console(api, engine, settings)
    error_docs, surface_routes = mount_surfaces(api, settings, engine, shapes)
    routes.routes.extend(RouteTable([*api.router.routes, *surface_routes]).routes)

    def openapi() -> dict[str, Any]:
        fresh = api.openapi_schema is None
        doc = FastAPI.openapi(api)
        if fresh:
            complete_openapi(doc, error_docs, ErrorBody)
            add_security(doc)
        return doc

    api.openapi = openapi  # type: ignore[method-assign]
    api.front = InlinePush(api.full_stack, settings, engine)
    api.add_middleware(RequestGuard, shapes=shapes, routes=routes)
    # Outermost, added last: a request id and the access log for every answer, the guard's
    # included.
    api.add_middleware(Observe, access_log=settings.access_log)
    return api
