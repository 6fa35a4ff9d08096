"""SAP Mobile Services' push API (`/mobileservices/push/…`), translated onto the native model.

Every push route translates its SAP body (schemas.sap.translate), accepts it the one native
way (producer.accept.accept_push), then waits up to `Settings.sap_wait_s` for the outcomes
(producer.waiter, woken by the worker's progress announcements) and answers SAP's
`{"status": null, "pushResults": [...]}` with SAP's HTTP statuses (SEED-NOTES 9).

Errors answer `{"status": <HTTP status>, "error": <reason>, "message": …, "details":
[{field, rule}]}`: the seed shows no error body, and this is the shape SAP's Java services
(Spring) answer with.
"""

from __future__ import annotations

from collections.abc import Sequence
from http import HTTPStatus
from typing import Annotated, Any

import redis.asyncio as aioredis
from fastapi import APIRouter, Path, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine
from sqlmodel import Session
from starlette.concurrency import run_in_threadpool

from producer.accept import accept_push
from producer.apps import webpush_public_key
from producer.auth import Caller, CallerDep
from producer.bodies import invalid, json_body, read_json
from producer.engagement import report_engagement
from producer.errors import InvalidRequest, NotFound, PushlineError
from producer.registrations import get_registration, list_registrations, upsert_registration
from producer.waiter import delivery_result, read_results, wait_for_outcome
from producer.webhooks import emit_installation
from schemas.api import RegistrationIn
from schemas.cm import CLIENT_INSTALLED, CLIENT_UPDATED
from schemas.codes import MessageState, Role
from schemas.sap import (
    EXAMPLE_REGISTRATION,
    EXAMPLE_RESPONSE,
    EXAMPLES,
    SAP_REGISTRATION_FIELDS,
    SCHEMAS,
    RouteKind,
    SapEngagement,
    SapError,
    SapInputError,
    SapRegistrationBody,
    notification_status,
    push_http_status,
    push_response,
    sap_registration,
    translate,
    translate_registration,
)
from schemas.settings import Settings
from schemas.tables import Delivery
from schemas.targets import TARGET_ROLE

PREFIX = "/mobileservices/push"
AppId = Annotated[
    str,
    Path(
        alias="applicationId",
        description="Not checked: with an API key the key decides the app (SEED-NOTES 4).",
    ),
]
MAX_PAGE = 1000

ERROR_MODEL = SapError


def owns(path: str) -> bool:
    return path.startswith(PREFIX + "/")


def error_response(exc: PushlineError) -> JSONResponse:
    try:
        reason = HTTPStatus(exc.status).phrase
    except ValueError:
        reason = "Error"
    content: dict[str, Any] = {
        "status": exc.status,
        "error": reason,
        "message": exc.message,
        "details": exc.details,
    }
    return JSONResponse(status_code=exc.status, content=content)


def _body_doc(schema: type[BaseModel], example: dict[str, Any]) -> dict[str, Any]:
    return json_body(schema, {"seed": {"summary": "The seed's example", "value": example}})


_BROWSER_EXAMPLE = {
    "pushToken": '{"endpoint":"https://push.example.com/abc",'
    '"keys":{"p256dh":"BN…","auth":"…"}}',
    "username": "anna",
    "formFactor": "browser",
    "userLocale": "en",
}
_ERROR_EXAMPLE = {
    "status": 400,
    "error": "Bad Request",
    "message": "notification.notification: required",
    "details": [{"field": "notification.notification", "rule": "required"}],
}
PUSH_RESPONSES: dict[int | str, dict[str, Any]] = {
    200: {
        "description": "Sent or queued: see pushResults",
        "content": {"application/json": {"example": EXAMPLE_RESPONSE}},
    },
    202: {"description": "Push to device: its one target is queued"},
    400: {
        "description": "Invalid payload",
        "content": {"application/json": {"example": _ERROR_EXAMPLE}},
    },
    401: {"description": "Missing or invalid credentials"},
    403: {"description": "The key lacks the route's role"},
    404: {"description": "No registration matched"},
    # Not an error body: the push results, every one of them a provider's rejection.
    422: {
        "description": "Every target was rejected: see pushResults",
        "content": {
            "application/json": {
                "schema": {
                    "type": "object",
                    "required": ["pushResults"],
                    "properties": {"pushResults": {"type": "array", "items": {"type": "object"}}},
                }
            }
        },
    },
    429: {"description": "The key's request quota is used up (Retry-After)"},
}


def router(settings: Settings, engine: Engine) -> APIRouter:
    api = APIRouter(prefix=PREFIX, tags=["SAP Mobile Services"])
    redis = aioredis.Redis.from_url(settings.redis_url, socket_connect_timeout=2.0)

    async def push(kind: RouteKind, request: Request, who: Caller, **path: str) -> JSONResponse:
        who.require(TARGET_ROLE[kind])
        body = await read_json(request)
        try:
            native = translate(kind, body, path)
        except SapInputError as exc:
            raise invalid(exc.field, exc.rule) from exc
        accepted = await run_in_threadpool(
            accept_push, who.app_id, native, settings=settings, engine=engine
        )
        progress = await wait_for_outcome(
            redis, settings, engine, accepted.message_id, settings.sap_wait_s
        )
        failed = progress.state == MessageState.FAILED
        status = push_http_status(kind, failed, progress.counts)
        if status == 404:
            why = progress.detail or "no active registration matched the target"
            raise NotFound(f"no device registration found: {why}")
        results = await run_in_threadpool(read_results, engine, accepted.message_id)
        return JSONResponse(push_response(results), status_code=status)

    def doc(kind: RouteKind, summary: str) -> dict[str, Any]:
        role = TARGET_ROLE[kind]
        return {
            "summary": summary,
            "description": f"Role: `{role}`. Waits up to `sap_wait_s` for the results.",
            "responses": PUSH_RESPONSES,
            "openapi_extra": _body_doc(SCHEMAS[kind], EXAMPLES[kind]),
        }

    device_doc = doc("device", "Push to device")

    @api.post(
        "/v1/backend/applications/{applicationId}/users/{username}/devices/{deviceId}/notifications",
        **device_doc,
    )
    async def push_to_device(
        request: Request, who: CallerDep, application_id: AppId, username: str, deviceId: str
    ) -> JSONResponse:
        return await push("device", request, who, username=username, device=deviceId)

    # The seed writes push to device under this path too (SEED-NOTES 1): served identically.
    @api.post(
        "/v1/backend/applications/{applicationId}/notifications/users/{username}/devices/"
        "{deviceId}/notifications",
        **device_doc,
    )
    async def push_to_device_alt(
        request: Request, who: CallerDep, application_id: AppId, username: str, deviceId: str
    ) -> JSONResponse:
        return await push("device", request, who, username=username, device=deviceId)

    @api.post(
        "/v2/backend/applications/{applicationId}/notifications/users",
        **doc("users", "Push to users (by username or global user id)"),
    )
    async def push_to_users(
        request: Request, who: CallerDep, application_id: AppId
    ) -> JSONResponse:
        return await push("users", request, who)

    @api.post(
        "/v2/backend/applications/{applicationId}/notifications/bulk",
        **doc("bulk", "Bulk push: one notification per listed user, over a template"),
    )
    async def bulk_push(request: Request, who: CallerDep, application_id: AppId) -> JSONResponse:
        return await push("bulk", request, who)

    @api.post(
        "/v1/backend/applications/{applicationId}/notifications",
        **doc("application", "Push to every registration of the application"),
    )
    async def push_to_application(
        request: Request, who: CallerDep, application_id: AppId
    ) -> JSONResponse:
        return await push("application", request, who)

    @api.post(
        "/v2/backend/applications/{applicationId}/topics/notifications",
        **doc("topic", "Push to topic subscribers (once per device)"),
    )
    async def push_to_topic(
        request: Request, who: CallerDep, application_id: AppId
    ) -> JSONResponse:
        return await push("topic", request, who)

    @api.post(
        "/v1/backend/applications/{applicationId}/groups/{group}/notifications",
        **doc("group", "Push to a push group (deprecated in SAP: use topics)"),
    )
    async def push_to_group(
        request: Request, who: CallerDep, application_id: AppId, group: str
    ) -> JSONResponse:
        return await push("group", request, who, group=group)

    @api.post(
        "/v1/backend/capabilities/{capability}/notifications",
        **doc("capability", "Push to a capability (the API key decides the app)"),
    )
    async def push_to_capability(request: Request, who: CallerDep, capability: str) -> JSONResponse:
        return await push("capability", request, who, capability=capability)

    # --- notification status -----------------------------------------------------------------

    def read_delivery(app_id: str, notification_id: str) -> Delivery:
        with Session(engine) as s:
            row = s.get(Delivery, notification_id)
        if row is None or row.app_id != app_id:
            raise NotFound(f"notification {notification_id} not found")
        return row

    status_example = notification_status(
        delivery_result(
            Delivery(
                id="1cd2ae77-3d7d-4638-bea4-74f2a1fe5553",
                message_id="",
                registration_id="",
                app_id="",
                provider="apns",
                status="SENT",
                code=0,
                provider_ref="7f315519-b4a5-4fce-9901-a3c3e09dfc58",
            )
        )
    )
    status_responses: dict[int | str, dict[str, Any]] = {
        200: {"content": {"application/json": {"example": status_example}}},
        404: {"description": "No such notification for this app"},
    }

    @api.get(
        "/v2/backend/notifications/{notificationId}/status",
        summary="Notification status",
        description="Any role of the app. Statuses: QUEUED, SENT, ERROR, RECEIVED, CONSUMED, "
        "CONFIRMED; the app-reported ones never move backwards.",
        responses=status_responses,
    )
    def get_status(notificationId: str, who: CallerDep) -> JSONResponse:
        row = read_delivery(who.app_id, notificationId)
        return JSONResponse(notification_status(delivery_result(row)))

    engagement_doc = _body_doc(SapEngagement, {"status": "CONSUMED"})

    # SAP's device SDKs report on the runtime API; Pushline serves the statuses there.
    runtime_status = (
        "/v1/runtime/applications/{applicationId}/notifications/{notificationId}/status"
    )

    async def report_status(
        request: Request, who: CallerDep, application_id: AppId, notificationId: str
    ) -> JSONResponse:
        body = await read_json(request)
        if not isinstance(body, dict) or not isinstance(body.get("status"), str):
            raise invalid("status", "required: one of RECEIVED, CONSUMED, CONFIRMED")
        if set(body) - {"status"}:
            field = sorted(set(body) - {"status"})[0]
            raise invalid(field, 'unknown field; the body is {"status": …}')
        row = await run_in_threadpool(
            report_engagement, engine, who.app_id, notificationId, body["status"]
        )
        return JSONResponse(notification_status(delivery_result(row)))

    for method in ("PUT", "POST"):  # PUT as SAP's runtime API; POST for plain HTTP clients
        api.add_api_route(
            runtime_status,
            report_status,
            methods=[method],
            operation_id=f"sap_report_status_{method.lower()}",
            summary="The app reports RECEIVED, CONSUMED or CONFIRMED",
            description="Any role of the app. A status already passed changes nothing; a "
            "notification still QUEUED or in ERROR is a 409.",
            responses=status_responses,
            openapi_extra=engagement_doc,
        )

    # --- registrations -----------------------------------------------------------------------

    registration_example = {
        "id": "F848A83E-FFDD-40F6-A88D-D672794592E9",
        "device": "7027c327e3e51945",
        "deviceModel": "Android",
        "formFactor": "tablet",
        "pushGroup": "all",
        "pushProvider": "android",
        "userLocale": "en",
        "username": "john.doe@acme.com",
    }

    @api.get(
        "/v2/backend/registrations/{registrationId}",
        summary="Registration by id",
        description=f"Role: `{Role.REGISTRATIONS_READ}`.",
        responses={200: {"content": {"application/json": {"example": registration_example}}}},
    )
    def registration(registrationId: str, who: CallerDep) -> JSONResponse:
        who.require(Role.REGISTRATIONS_READ)
        return JSONResponse(sap_registration(get_registration(engine, who.app_id, registrationId)))

    @api.get(
        "/v2/backend/registrations",
        summary="Registrations by username or push group",
        description=f"Role: `{Role.REGISTRATIONS_READ}`. Without a filter, every registration. "
        "Pages of `$top` (default 100, at most 1000); `@odata.nextLink` names the next page.",
        responses={
            200: {"content": {"application/json": {"example": {"value": [registration_example]}}}}
        },
        openapi_extra={
            "parameters": [
                {"name": name, "in": "query", "required": False, "schema": {"type": kind}}
                for name, kind in (
                    ("username", "string"),
                    ("pushGroup", "string"),
                    ("$top", "integer"),
                    ("$skiptoken", "string"),
                )
            ]
        },
    )
    def registrations(request: Request, who: CallerDep) -> JSONResponse:
        who.require(Role.REGISTRATIONS_READ)
        q = request.query_params
        top = _top(q.get("$top"))
        rows, nxt = list_registrations(
            engine,
            who.app_id,
            username=q.get("username"),
            push_group=q.get("pushGroup"),
            cursor=q.get("$skiptoken"),
            limit=top,
        )
        page: dict[str, Any] = {"value": [sap_registration(r) for r in rows]}
        if nxt is not None:
            page["@odata.nextLink"] = str(request.url.include_query_params(**{"$skiptoken": nxt}))
        return JSONResponse(page)

    # --- device registration (SAP's runtime API) ----------------------------------------------

    async def register(
        request: Request, who: Caller, os: str, device_id: str | None
    ) -> JSONResponse:
        who.require(Role.ADMIN)  # as the native registration route
        try:
            native = translate_registration(os, device_id, await read_json(request))
            body = RegistrationIn.model_validate(native)
        except SapInputError as exc:
            raise invalid(exc.field, exc.rule) from exc
        except ValidationError as exc:
            err = exc.errors()[0]
            raise invalid(_sap_field(err["loc"]), err["msg"]) from None
        try:
            reg, created = await run_in_threadpool(upsert_registration, engine, who.app_id, body)
        except InvalidRequest as exc:
            first = exc.details[0] if exc.details else {"field": "body", "rule": exc.message}
            raise invalid(_sap_field(first["field"].split(".")), first["rule"]) from None
        kind = CLIENT_INSTALLED if created else CLIENT_UPDATED
        emit_installation(settings, engine, who.app_id, kind, reg)
        return JSONResponse(sap_registration(reg), status_code=201 if created else 200)

    runtime_devices = "/v1/runtime/applications/{applicationId}/os/{os}/devices"
    registration_doc: dict[str, Any] = {
        "description": f"Role: `{Role.ADMIN}`. One user on one device: (`username`, deviceId) "
        "names the registration, so two users of a shared device are two registrations. "
        "Without `pushToken` the device is registered without one (code 5 when pushed). "
        "`{os}` is `ios`, `android` or `w3cpushapi`; for `w3cpushapi` the `pushToken` is "
        "the browser's PushSubscription (its JSON text or the object). Answers SAP's "
        "registration document, 201 when created, 200 when updated.",
        "responses": {
            200: {"content": {"application/json": {"example": registration_example}}},
            201: {
                "description": "Created",
                "content": {"application/json": {"example": registration_example}},
            },
            400: {"content": {"application/json": {"example": _ERROR_EXAMPLE}}},
        },
        "openapi_extra": json_body(
            SapRegistrationBody,
            {
                "seed": {"summary": "The seed's example", "value": EXAMPLE_REGISTRATION},
                "browser": {"summary": "A browser (w3cpushapi)", "value": _BROWSER_EXAMPLE},
            },
        ),
    }

    @api.post(
        runtime_devices,
        summary="Register a device (the device id is generated)",
        **registration_doc,
    )
    async def register_new_device(
        request: Request, who: CallerDep, application_id: AppId, os: str
    ) -> JSONResponse:
        return await register(request, who, os, None)

    async def register_device(
        request: Request, who: CallerDep, application_id: AppId, os: str, deviceId: str
    ) -> JSONResponse:
        return await register(request, who, os, deviceId)

    for method in ("PUT", "POST"):
        api.add_api_route(
            runtime_devices + "/{deviceId}",
            register_device,
            methods=[method],
            operation_id=f"sap_register_device_{method.lower()}",
            summary="Register or update a device by its id",
            **registration_doc,
        )

    @api.get(
        "/v1/runtime/applications/{applicationId}/pushconfiguration/os/{os}/pushid",
        summary="The push configuration a W3C web app subscribes with",
        description="Any role of the app. For `w3cpushapi`, `pushId` is the VAPID public key "
        "(base64url) for `pushManager.subscribe({applicationServerKey})`.",
        responses={200: {"content": {"application/json": {"example": {"pushId": "BN…"}}}}},
    )
    def push_id(who: CallerDep, application_id: AppId, os: str) -> JSONResponse:
        if os != "w3cpushapi":
            raise invalid("os", "only w3cpushapi has a server-generated push id")
        return JSONResponse({"pushId": webpush_public_key(engine, who.app_id)})

    return api


def _sap_field(loc: Sequence[int | str]) -> str:
    """A native field path (`keys`, `p256dh`) in SAP's words (`pushToken.keys.p256dh`)."""
    head, *rest = [str(p) for p in loc] or ["body"]
    return ".".join([SAP_REGISTRATION_FIELDS.get(head, head), *rest])


def _top(value: str | None) -> int:
    if value is None:
        return 100
    if not value.isdigit() or not 1 <= int(value) <= MAX_PAGE:
        raise invalid("$top", f"a whole number from 1 to {MAX_PAGE}")
    return int(value)
