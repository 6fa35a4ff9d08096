"""Microbizz: the app's Envelope calls (`POST /microbizz/api`) and Microbizz's push to the
app (`POST /microbizz/push`), translated onto the native Registration / Message.

- The app's API key (X-API-Key, Basic alias:key or `App <key>`) decides the app, as on every
  route; the Envelope's `contract` and `password` are Microbizz's and are not read.
  Registering needs the role `admin` (as the native registration route); pushing to a
  device `push_single` (or `push_multiple`), to a user `push_multiple`.
- An Envelope with `imei` and a push token creates or updates that device's Registration,
  found by its device id alone: the same phone with a new token, or a new user logged in
  (the Envelope's `username`), updates it and never adds a second one.
- Errors answer in the Envelope's own form, `{"status": 0, "msg": …, "field": …}`.
"""

from __future__ import annotations

from typing import Any, Literal

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel
from sqlalchemy import Engine, select
from sqlmodel import col
from starlette.concurrency import run_in_threadpool

from producer.accept import accept_push
from producer.auth import CallerDep
from producer.bodies import json_body, read_json
from producer.errors import InvalidRequest, PushlineError
from producer.registrations import upsert_registration
from schemas import microbizz as mb
from schemas.api import RegistrationIn
from schemas.codes import Role
from schemas.db import session_scope
from schemas.settings import Settings
from schemas.tables import Registration, utcnow

PREFIX = "/microbizz"


def owns(path: str) -> bool:
    return path == PREFIX or path.startswith(PREFIX + "/")


class MicrobizzErrorAnswer(BaseModel):
    """An error as Microbizz answers it: `status` 0 and `msg`; Pushline adds which field
    broke which rule."""

    status: Literal[0]
    msg: str
    field: str | None = None
    rule: str | None = None


ERROR_MODEL = MicrobizzErrorAnswer
_ERRORS: dict[int | str, dict[str, Any]] = {
    s: {"model": MicrobizzErrorAnswer} for s in (400, 401, 403, 404, 409, 429, 503)
}


def error_response(exc: PushlineError) -> JSONResponse:
    """Microbizz answers `status` 0 and a `msg`; Pushline adds the field and rule."""
    content: dict[str, Any] = {"status": 0, "msg": exc.message}
    if exc.details:
        content["field"] = exc.details[0]["field"]
        content["rule"] = exc.details[0]["rule"]
    return JSONResponse(status_code=exc.status, content=content)


def _invalid(exc: mb.MicrobizzError) -> InvalidRequest:
    return InvalidRequest(str(exc), [{"field": exc.field, "rule": exc.rule}])


# --- the device -------------------------------------------------------------------------------


def register_device(engine: Engine, app_id: str, env: mb.Envelope) -> tuple[str, bool] | None:
    """Create or update the reporting device's Registration; (id, created) or None when the
    call reports nothing Pushline can register (no token, and a device it does not know)."""
    reported = mb.reported_token(env)
    if reported is None:
        return _touch_known(engine, app_id, env) if env.imei else None
    field, token = reported
    body = RegistrationIn.model_validate(
        {"token": token, "device_id": env.imei or None, "username": env.username or None}
    )
    try:
        reg, created = upsert_registration(engine, app_id, body, identity="device")
    except InvalidRequest as exc:
        rule = exc.details[0]["rule"] if exc.details else exc.message
        raise _invalid(mb.MicrobizzError(field, rule)) from None
    return reg.id, created


def _touch_known(engine: Engine, app_id: str, env: mb.Envelope) -> tuple[str, bool] | None:
    """A call with `imei` and no token: a known device takes the Envelope's user."""
    with session_scope(engine) as s:
        reg = (
            s.execute(
                select(Registration)
                .where(col(Registration.app_id) == app_id, col(Registration.device_id) == env.imei)
                .order_by(col(Registration.updated_at).desc())
            )
            .scalars()
            .first()
        )
        if reg is None:
            return None
        if env.username and reg.username != env.username:
            reg.username, reg.updated_at = env.username, utcnow()
            s.add(reg)
        return reg.id, False


# --- examples (OpenAPI and tests) -------------------------------------------------------------

ENVELOPE_EXAMPLES: dict[str, Any] = {
    "settings": {
        "summary": "GetMobileAppSettings with the IMEI and push token (the seed's advice)",
        "value": {
            "contract": 1234,
            "username": "anna",
            "password": "…",
            "imei": "356938035643809",
            "pushtoken": mb.EXAMPLE_TOKEN,
            "commands": [{"command": "GetMobileAppSettings"}],
        },
    },
    "messages": {
        "summary": "GetMessagesByLastChange with its own push token; the IMEI is a phone number",
        "value": {
            "contract": 1234,
            "username": "anna",
            "password": "…",
            "imei": "+4512345678",
            "commands": [
                {
                    "command": "GetMessagesByLastChange",
                    "changedate": "2024-05-01",
                    "changetime": "08:00:00",
                    "pushtoken": "iOS:" + "ab" * 32,
                },
                {"command": "GetMBMessagesByLastChange", "pushtoken": "iOS:" + "ab" * 32},
            ],
        },
    },
}
PUSH_EXAMPLES: dict[str, Any] = {
    "sync": {
        "summary": "Synchronise now: silent (empty title)",
        "value": {"imei": "356938035643809", "data": {"destination": "sync"}},
    },
    "notification": {
        "summary": "A notification about a task's new note",
        "value": {
            "user": "anna",
            "title": "Task 99: new note",
            "body": "Bo commented",
            "data": {
                "destination": "notification",
                "vibrate": True,
                "sound": True,
                "userid": 12,
                "usertext": "Bo",
                "modcode": "todo",
                "objid": 99,
                "threadid": 5,
                "messageid": 6,
            },
        },
    },
    "newmessage": {
        "summary": "A new message in a thread",
        "value": {
            "imei": "+4512345678",
            "title": "New message from Anna",
            "data": {
                "destination": "newmessage",
                "vibrate": True,
                "sound": False,
                "usertext": "Anna",
                "threadid": 4711,
                "messageid": 815,
            },
        },
    },
    "display": {
        "summary": "No destination: shown, and the phone vibrates",
        "value": {
            "imei": "356938035643809",
            "title": "Please call the office",
            "body": "About customer 42",
            "data": {"modcode": "customer", "objid": 42, "id": 7, "confirmation": 1},
        },
    },
}


def router(settings: Settings, engine: Engine) -> APIRouter:
    api = APIRouter(prefix=PREFIX, tags=["Microbizz"])

    @api.post(
        "/api",
        response_model=mb.EnvelopeAnswer,
        responses=_ERRORS,
        openapi_extra=json_body(mb.Envelope, ENVELOPE_EXAMPLES),
    )
    async def envelope(request: Request, who: CallerDep) -> mb.EnvelopeAnswer:
        """One Microbizz Envelope. Its `imei` (IMEI or phone number) and push token
        (`pushtoken`, or a GetMessagesByLastChange / GetMBMessagesByLastChange command's
        own) create or update the device's Registration. GetMobileAppSettings,
        GetMessagesByLastChange and GetMBMessagesByLastChange answer `status` 1 with empty
        settings and message lists (their content is Microbizz's); any other command
        answers `status` 0 (and, with `haltonerror` 1, stops the rest). `registration`
        (Pushline's addition) names the Registration written, if any."""
        who.require(Role.ADMIN)
        try:
            env = mb.parse_envelope(await read_json(request))
            mb.reported_token(env)  # every token checked before anything is written
        except mb.MicrobizzError as exc:
            raise _invalid(exc) from None
        written = await run_in_threadpool(register_device, engine, who.app_id, env)
        results = mb.envelope_results(env)
        return mb.EnvelopeAnswer(
            status=1 if all(r["status"] == 1 for r in results) else 0,
            results=results,
            registration=(
                {"id": written[0], "created": written[1]} if written is not None else None
            ),
        )

    @api.post(
        "/push",
        response_model=mb.PushAnswer,
        status_code=202,
        responses=_ERRORS,
        openapi_extra=json_body(mb.MicrobizzPush, PUSH_EXAMPLES),
    )
    async def push(request: Request, who: CallerDep) -> JSONResponse:
        """Microbizz pushes to the app: `title`, `body` and the seed's typed `data`, to a
        device (`imei`) or a Microbizz user (`user`, the Envelope's username). The data
        reaches the app with its types: beside `aps` on APNs; on FCM every value is a
        string, numbers and booleans as their JSON text (one JSON parse restores them)."""
        try:
            parsed = mb.parse_push(await read_json(request))
        except mb.MicrobizzError as exc:
            raise _invalid(exc) from None
        native = mb.native_push(parsed)
        # One device is a transactional push (push_single); a user may have many devices.
        who.require(*(("push_single", "push_multiple") if parsed.imei else ("push_multiple",)))
        accepted = await run_in_threadpool(
            accept_push, who.app_id, native, settings=settings, engine=engine
        )
        answer = mb.PushAnswer(messageid=accepted.message_id, statusurl=accepted.status_url)
        return JSONResponse(answer.model_dump(), status_code=202)

    return api
