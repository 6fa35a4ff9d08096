"""Backendless messaging: publish to a channel (broadcast by OS, singlecast, delayed), message
status, and device registration with channels, translated onto the native model.

The `{REST-api-key}` in the path is a Pushline API key of the app named by
`{application-id}`. Channels are topic subscriptions: a device registered with channel
"news" is subscribed to topic "news", and publishing to "news" reaches only those devices.
"""

from __future__ import annotations

import re
from typing import Annotated, Any

from fastapi import APIRouter, Path, Request, Response
from fastapi.responses import JSONResponse
from sqlalchemy import Engine, select
from sqlmodel import Session, col
from starlette.concurrency import run_in_threadpool

from producer import usertokens
from producer.accept import accept_push
from producer.auth import Caller, authenticate
from producer.bodies import json_body, read_json
from producer.errors import (
    Forbidden,
    InvalidRequest,
    MethodNotAllowed,
    NotFound,
    PushlineError,
    Unauthorized,
    Unavailable,
    UnsupportedMediaType,
)
from producer.registrations import delete_registration, registration_out, upsert_registration
from producer.schedules import get_schedule
from producer.status import message_status
from schemas import backendless as bl
from schemas.codes import Role
from schemas.settings import Settings
from schemas.tables import Registration, utcnow

# Empty or malformed ids and keys too: a path shaped like Backendless's answers like it.
# `usertokens` and `registrations` are Pushline's routes, so no channel may bear those names.
_OWNED = re.compile(r"^/[^/]*/[^/]*/messaging(?:/|$)")
_BASE = "/{application_id}/{api_key}/messaging"
MessageIdSegment = Annotated[
    str,
    Path(
        alias="channel_name",
        description="GET: the messageId a publish answered (POST: the channel's name)",
    ),
]

ERROR_MODEL = bl.ErrorAnswer
NEVER_ANSWERS = frozenset({415})  # Backendless answers a body not declared JSON 400


def owns(path: str) -> bool:
    return bool(_OWNED.match(path))


def error_response(exc: PushlineError) -> JSONResponse:
    """Backendless's error shape: exactly `{"message", "code"}`. A body not declared JSON is
    Backendless's 400 "could not parse" (its Content-Type header is mandatory), not a 415."""
    if isinstance(exc, UnsupportedMediaType):
        content = {"message": f"Could not parse request: {exc.message}", "code": bl.UNPARSEABLE}
        return JSONResponse(status_code=400, content=content)
    code = bl.error_code(exc.status, exc.code)
    return JSONResponse(status_code=exc.status, content={"message": exc.message, "code": code})


def _invalid(exc: bl.BackendlessError) -> InvalidRequest:
    return InvalidRequest(
        f"{exc.field}: {exc.rule}", [{"field": exc.field, "rule": exc.rule}], code=exc.code
    )


def _caller(request: Request, application_id: str, api_key: str) -> Caller:
    """The key in the path, which must belong to the application in the path; counted
    against the key's request quota as on every other route."""
    who = authenticate(request, api_key)
    if who.app_id != application_id:
        raise Unauthorized(f"this API key does not belong to application {application_id}")
    return who


async def _json(request: Request, code: int, field_code: int) -> Any:
    """The body; a body that is not JSON is `code`, a value breaking a rule of every body
    (a NUL in a string, a number out of range) is `field_code`, naming its field."""
    try:
        return await read_json(request)
    except InvalidRequest as exc:
        field = exc.details[0]["field"] if exc.details else "body"
        if field != "body":
            raise InvalidRequest(exc.message, exc.details, code=field_code) from None
        raise InvalidRequest(f"Could not parse request: {exc}", exc.details, code=code) from None


def _errors(*codes: tuple[int, int, str]) -> dict[int | str, dict[str, Any]]:
    out: dict[int | str, dict[str, Any]] = {}
    for status, code, message in codes:
        out[status] = {
            "model": bl.ErrorAnswer,
            "content": {"application/json": {"example": {"message": message, "code": code}}},
        }
    return out


PUBLISH_EXAMPLES: dict[str, Any] = {
    "basic": {
        "summary": "Basic push to every device of the channel",
        "value": {
            "message": "Hello subscribers",
            "headers": {
                "ios-alert": "Hello iPhone",
                "ios-badge": "2",
                "ios-sound": "chime.caf",
                "android-ticker-text": "You have news",
                "android-content-title": "News",
                "android-content-text": "Hello Android",
            },
        },
    },
    "by_os": {
        "summary": "The channel's iOS and Android devices (mask IOS | ANDROID)",
        "value": {"message": "For phones", "pushBroadcast": 3},
    },
    "specific_devices": {
        "summary": "Specific devices by device id",
        "value": {"message": "Just you", "pushSinglecast": ["deviceId1", "deviceId2"]},
    },
    "delayed": {
        "summary": "Delayed and repeated publishing (epoch milliseconds, seconds)",
        "value": {
            "message": "Daily digest",
            "publishAt": 1893456000000,
            "repeatEvery": 86400,
            "repeatExpiresAt": 1896048000000,
        },
    },
}
REGISTRATION_EXAMPLES: dict[str, Any] = {
    "android": {
        "summary": "An Android device on two channels",
        "value": {
            "deviceToken": "fcm-token-from-firebase:APA91b",
            "deviceId": "a1b2c3d4",
            "os": "ANDROID",
            "osVersion": "14",
            "channels": ["default", "news"],
        },
    }
}


def router(settings: Settings, engine: Engine) -> APIRouter:
    api = APIRouter(tags=["Backendless"])
    no_key = (401, bl.NO_PERMISSION, "invalid API key")
    no_role = (403, bl.NO_PERMISSION, "this API key lacks the role push_all")

    # Declared before the channel route, so "registrations" is never taken as a channel.
    @api.post(
        f"{_BASE}/registrations",
        response_model=bl.RegistrationAnswer,
        responses=_errors(
            (400, bl.BAD_REGISTRATION, "os: must be IOS or ANDROID, not 'BLACKBERRY'"),
            no_key,
            (403, bl.NO_PERMISSION, "this API key lacks the role admin"),
        ),
        openapi_extra=json_body(bl.DeviceRegistrationBody, REGISTRATION_EXAMPLES),
    )
    async def register_device(
        request: Request, application_id: str, api_key: str
    ) -> bl.RegistrationAnswer:
        """Register a device with channels (added to its channels; `default` when none).

        Idempotent on `deviceId`: registering again updates the token and adds channels.
        """
        # The key lookup and quota count do I/O: off the event loop, as FastAPI runs `caller`.
        who = await run_in_threadpool(_caller, request, application_id, api_key)
        who.require(Role.ADMIN)  # as the native registration route
        try:
            body = await _json(request, bl.BAD_REGISTRATION, bl.BAD_REGISTRATION)
            device = bl.translate_registration(body)
        except bl.BackendlessError as exc:
            raise _invalid(exc) from None
        return await run_in_threadpool(_register, engine, who.app_id, device)

    @api.get(
        f"{_BASE}/registrations/{{device_id}}",
        response_model=bl.DeviceRegistrationOut,
        responses=_errors(
            no_key, (404, bl.UNKNOWN_DEVICE, "no registration with device id a1b2c3d4")
        ),
    )
    def read_device(
        request: Request, application_id: str, api_key: str, device_id: str
    ) -> bl.DeviceRegistrationOut:
        who = _caller(request, application_id, api_key)
        who.require(Role.REGISTRATIONS_READ)
        with Session(engine) as s:
            reg = _by_device(s, who.app_id, device_id, bl.UNKNOWN_DEVICE)
            out = registration_out(s, reg)
        return bl.registration_out(
            out.token or "", device_id, out.platform, out.os_version, out.topics
        )

    @api.delete(
        f"{_BASE}/registrations/{{device_id}}",
        response_model=bl.CancelAnswer,
        responses=_errors(
            no_key, (404, bl.UNKNOWN_DEVICE_CANCEL, "no registration with device id a1b2c3d4")
        ),
    )
    def cancel_device(
        request: Request, application_id: str, api_key: str, device_id: str
    ) -> bl.CancelAnswer:
        """Cancel the device's registration (all its channels)."""
        who = _caller(request, application_id, api_key)
        who.require(Role.ADMIN)
        with Session(engine) as s:
            reg_id = _by_device(s, who.app_id, device_id, bl.UNKNOWN_DEVICE_CANCEL).id
        delete_registration(engine, who.app_id, reg_id)
        return bl.CancelAnswer(result=True)

    @api.post(
        f"{_BASE}/usertokens",
        status_code=201,
        responses=_errors(
            (400, bl.INVALID_PARAMETER, "channels: list the channels the user may publish to"),
            no_key,
            (403, bl.NO_PERMISSION, "this API key lacks the role admin"),
        ),
        openapi_extra=json_body(
            bl.UserTokenIn,
            {"some": {"value": {"user": "ann", "publish": "some", "channels": ["news"]}}},
        ),
    )
    async def issue_user_token(request: Request, application_id: str, api_key: str) -> Response:
        """Pushline's own `user-token` for a user (role admin): `publish` is `all`
        channels, `some` (listed in `channels`) or `none`. The token is in this answer only
        (`user-token`); a publish carrying it in the `user-token` header runs with that
        user's permission, and a user who may not publish there answers 5007."""
        who = await run_in_threadpool(_caller, request, application_id, api_key)
        who.require(Role.ADMIN)
        try:
            spec = bl.parse_user_token(
                await _json(request, bl.UNPARSEABLE, bl.INVALID_PARAMETER)
            )
        except bl.BackendlessError as exc:
            raise _invalid(exc) from None
        token, row = await run_in_threadpool(usertokens.issue, engine, who.app_id, spec)
        body = usertokens.out(row, token).model_dump(by_alias=True, exclude_none=True)
        return JSONResponse(status_code=201, content=body)

    @api.delete(
        f"{_BASE}/usertokens/{{token_id}}",
        status_code=204,
        responses=_errors(no_key, (404, 404, "no user token 3f1c…")),
    )
    def revoke_user_token(
        request: Request, application_id: str, api_key: str, token_id: str
    ) -> Response:
        """Revoke a user token by its `objectId` (role admin): it is refused from then on."""
        who = _caller(request, application_id, api_key)
        who.require(Role.ADMIN)
        usertokens.revoke(engine, who.app_id, token_id)
        return Response(status_code=204)

    @api.post(
        f"{_BASE}/{{channel_name}}",
        response_model=bl.PublishAnswer,
        responses={
            **_errors(
                (400, bl.PUBLISH_AT, "publishAt: Invalid publishAt date"),
                no_key,
                no_role,
                (429, bl.RATE_LIMITED, "this API key is limited to 600 requests per minute"),
            ),
            503: {
                "description": "Nothing was accepted: the store or the queue is unavailable.",
                "content": {
                    "application/json": {
                        "example": {
                            "status": "failed",
                            "messageId": None,
                            "message": "the queue is unavailable (result code 3)",
                            "code": 503,
                        }
                    }
                },
            },
        },
        openapi_extra=json_body(bl.PublishBody, PUBLISH_EXAMPLES),
    )
    async def publish(
        request: Request, application_id: str, api_key: str, channel_name: str
    ) -> Response:
        """Publish a push notification to a channel.

        Without `pushBroadcast` / `pushSinglecast` every device registered with the channel
        receives it; `pushBroadcast` narrows the channel's devices by OS (IOS=1, ANDROID=2,
        WP=4 is not supported, ALL=7); `pushSinglecast` names devices by id. `publishAt`,
        `repeatEvery` and `repeatExpiresAt` delay and repeat it. Roles: push_all for the
        channel, push_multiple for singlecast (push_single suffices for one device).
        `publishPolicy` BOTH is accepted and pushed (Pushline has no pub/sub subscribers).
        """
        who = await run_in_threadpool(_caller, request, application_id, api_key)
        if not bl.json_content_type(request.headers.get("content-type")):
            raise InvalidRequest(
                "Content-Type: must be set to application/json; this header is mandatory",
                [{"field": "Content-Type", "rule": "must be application/json"}],
                code=bl.UNPARSEABLE,
            )
        user_token = request.headers.get("user-token")
        if user_token is not None:
            await run_in_threadpool(_user_may_publish, engine, who.app_id, user_token, channel_name)
        try:
            pub = bl.translate_publish(
                await _json(request, bl.UNPARSEABLE, bl.INVALID_PARAMETER),
                channel_name,
                utcnow(),
                repeat_every_min_s=settings.repeat_every_min_s,
            )
        except bl.BackendlessError as exc:
            raise _invalid(exc) from None
        who.require(*pub.roles)
        try:
            accepted = await run_in_threadpool(
                accept_push, who.app_id, pub.request, settings=settings, engine=engine
            )
        except Unavailable as exc:
            # A valid publish that cannot be carried out: "failed" (SEED-NOTES 17), nothing kept.
            body = {"status": "failed", "messageId": None, "message": exc.message, "code": 503}
            return JSONResponse(status_code=503, content=body)
        answer = bl.PublishAnswer(status="scheduled", messageId=accepted.message_id)
        return JSONResponse(answer.model_dump())

    @api.get(
        # The publish route's path: one path with two methods (OpenAPI allows no two
        # templates that differ only in a parameter's name), so GET's segment has its name.
        f"{_BASE}/{{channel_name}}",
        response_model=bl.MessageStatusAnswer,
        responses=_errors(no_key),
    )
    def publish_status(
        request: Request, application_id: str, api_key: str, message_id: MessageIdSegment
    ) -> bl.MessageStatusAnswer:
        """Get Message Status: "scheduled" (waiting or still being delivered), "published"
        (delivered to at least one device), "failed" (with errorMessage), "cancelled"
        (a cancelled delayed publish) or "unknown" (no such message in this application).
        """
        if message_id == "registrations":  # the literal path, which only takes POST
            raise MethodNotAllowed("GET is not allowed here; allowed: POST", ["POST"])
        who = _caller(request, application_id, api_key)  # any role of the app may read
        status, error = _publish_status(engine, who.app_id, message_id)
        return bl.MessageStatusAnswer(messageId=message_id, status=status, errorMessage=error)

    return api


def _user_may_publish(engine: Engine, app_id: str, token: str, channel: str) -> None:
    """The seed: with `user-token` the publish runs with that user's permissions. A token
    Pushline did not issue to this app is 401, a user who may not publish here 403; both
    5007, "User does not have the permission to publish messages"."""
    row = usertokens.find(engine, app_id, token)
    if row is None:
        raise Unauthorized("user-token is not valid for this application", code=bl.NO_PERMISSION)
    if not bl.may_publish(row.publish, row.channels, channel):
        raise Forbidden(
            f"User does not have the permission to publish messages: user {row.user!r} may "
            f"not publish to channel {channel!r}",
            code=bl.NO_PERMISSION,
        )


def _register(engine: Engine, app_id: str, device: bl.DeviceRegistration) -> bl.RegistrationAnswer:
    """Channels are added to those the device already has (Backendless keeps one
    registration per channel), written in the same transaction as the registration."""
    with Session(engine) as s:
        known = _find_device(s, app_id, device.registration.device_id or "")
        have = registration_out(s, known).topics if known is not None else []
    body = device.registration.model_copy(
        update={"topics": list(dict.fromkeys([*have, *device.channels]))}
    )
    try:
        reg, _ = upsert_registration(engine, app_id, body, identity="device")
    except InvalidRequest as exc:
        field = bl.registration_field(exc.details[0]["field"]) if exc.details else "body"
        rule = exc.details[0]["rule"] if exc.details else exc.message
        raise InvalidRequest(
            f"{field}: {rule}", [{"field": field, "rule": rule}], code=bl.BAD_REGISTRATION
        ) from None
    return bl.RegistrationAnswer(registrationId=reg.id)


def _find_device(s: Session, app_id: str, device_id: str) -> Registration | None:
    q = (
        select(Registration)
        .where(col(Registration.app_id) == app_id, col(Registration.device_id) == device_id)
        .order_by(col(Registration.updated_at).desc())
    )
    return s.execute(q).scalars().first()


def _by_device(s: Session, app_id: str, device_id: str, code: int) -> Registration:
    reg = _find_device(s, app_id, device_id)
    if reg is None:
        raise NotFound(f"no registration with device id {device_id}", code=code)
    return reg


def _publish_status(
    engine: Engine, app_id: str, message_id: str
) -> tuple[bl.PublishStatus, str | None]:
    """A messageId names a Message (an immediate publish, or one run of a delayed one) or
    the Schedule of a delayed publish."""
    try:
        return bl.message_publish_status(message_status(engine, app_id, message_id))
    except NotFound:
        pass
    try:
        sch = get_schedule(engine, app_id, message_id)
    except NotFound:
        return "unknown", "no message with this id in this application"
    latest = message_status(engine, app_id, sch.message_ids[0]) if sch.message_ids else None
    return bl.schedule_publish_status(sch, latest)
