"""CM.com push events, inbound: `POST /cm/events` takes one of CM's event documents.

- The app's API key (X-API-Key, Basic alias:key, or `App <key>`) decides the app.
  `to.number` (CM's AppKey) must be a GUID but is not compared with anything, as the key
  decides the tenant (SEED-NOTES 4); outbound events carry the Pushline app id there.
- ClientInstalled / ClientUpdated create or update the Registration whose device id is the
  installation id (`from.number`, stored as 32 hex digits; a device registered natively
  with the hyphenated form is found too). Lifecycle events need the role `admin`, as the
  native registration routes do; engagement events any key of the app, as native
  engagement reports. CM's documents carry no push token: `custom.pushToken` (Pushline's
  addition) gives one; without it the installation is registered without a token and its
  deliveries end with code 5 "push token missing".
- ClientUnregistered deactivates the installation (its deliveries, if any were queued,
  end with code 7); a later ClientInstalled / ClientUpdated revives it.
- MessageOpened → CONSUMED, MessageDismissed → RECEIVED and `dismissed_at`, MessageDelete
  → `deleted_at`, no status change (SEED-NOTES 27), never backwards; `reference` is the
  Delivery id; the times are the event's `timeUtc`.
- What the events say of an installation is kept (clientId, msisdn among it, also from
  ClientUnregistered) and goes out again in its later outbound documents.
Each accepted event is relayed to the app's webhooks (producer/webhooks.py).
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ValidationError
from sqlalchemy import Engine, select
from sqlmodel import col
from starlette.concurrency import run_in_threadpool

from producer.auth import Caller, CallerDep
from producer.bodies import json_body, loads
from producer.engagement import record_deleted, record_dismissed, report_engagement
from producer.errors import InvalidRequest, NotFound, PushlineError
from producer.registrations import normalise_phone, upsert_registration
from producer.webhooks import emit, emit_installation
from schemas.api import RegistrationIn
from schemas.cm import (
    CLIENT_INSTALLED,
    CLIENT_UNREGISTERED,
    ENGAGEMENT_STATUS,
    LIFECYCLE_TYPES,
    MESSAGE_DISMISSED,
    CmEvent,
    DocumentError,
    engagement_document,
    guid_forms,
    installation_fields,
    parse_event,
    parse_guid,
)
from schemas.codes import Role
from schemas.db import session_scope
from schemas.settings import Settings
from schemas.tables import Registration, utcnow

PATH = "/cm/events"

# Registration fields named the way the document names them, for 400s.
_DOC_FIELD = {
    "token": "event.custom.pushToken",
    "phone_number": "event.custom.msisdn",
    "platform": "event.custom.deviceOs",
    "provider": "event.custom.deviceOs",
    "app_version": "event.custom.clientVersion",
    "os_version": "event.custom.deviceOsVersion",
    "device_model": "event.custom.deviceModel",
    "preferred_languages": "event.custom.preferredLanguages",
    "locale": "event.custom.preferredLanguages",
    "device_id": "from.number",
}


class CmEventAnswer(BaseModel):
    type: str
    installationId: str
    registrationId: str | None = None
    active: bool | None = None
    reference: str | None = None
    status: str | None = None


def owns(path: str) -> bool:
    return path == PATH or path.startswith(PATH + "/")


def error_response(exc: PushlineError) -> JSONResponse:
    # CM defines no error body for events; the native one, so clients see field and rule.
    content: dict[str, Any] = {"error": exc.kind, "message": exc.message, "details": exc.details}
    return JSONResponse(status_code=exc.status, content=content)


def _bad(field: str, rule: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {rule}", [{"field": field, "rule": rule}])


def _renamed(exc: InvalidRequest) -> InvalidRequest:
    """A registration rule broken by a document field: name the document's field."""
    first = exc.details[0] if exc.details else {"field": "body", "rule": exc.message}
    field = _DOC_FIELD.get(first["field"], first["field"])
    return _bad(field, first["rule"])


# --- lifecycle --------------------------------------------------------------------------------


def _find(engine: Engine, app_id: str, installation: str) -> Registration | None:
    forms = guid_forms(parse_guid(installation))
    with session_scope(engine) as s:
        reg = (
            s.execute(
                select(Registration)
                .where(col(Registration.app_id) == app_id, col(Registration.device_id).in_(forms))
                .order_by(col(Registration.active).desc(), col(Registration.updated_at).desc())
            )
            .scalars()
            .first()
        )
        if reg is not None:
            s.expunge(reg)
        return reg


def install(engine: Engine, app_id: str, doc: CmEvent) -> Registration:
    """ClientInstalled / ClientUpdated: create or update the installation's Registration."""
    fields = installation_fields(doc.profile)
    existing = _find(engine, app_id, doc.installation_id)
    device_id = existing.device_id if existing is not None else doc.installation_id
    if fields.token is not None:
        platform = fields.platform or (existing.platform if existing is not None else None)
        try:
            body = RegistrationIn.model_validate(
                {
                    "token": fields.token,
                    "platform": platform,
                    "device_id": device_id,
                    "phone_number": fields.phone_number,
                    **fields.values,
                }
            )
        except ValidationError as exc:
            err = exc.errors()[0]
            raise _bad(
                _DOC_FIELD.get(str(err["loc"][0]), "event.custom"), str(err["msg"])
            ) from None
        try:
            out, _ = upsert_registration(engine, app_id, body, identity="device")
        except InvalidRequest as exc:
            raise _renamed(exc) from None
        with session_scope(engine) as s:
            reg = s.get(Registration, out.id)
            assert reg is not None
            if fields.client_id is not None:
                reg.client_id = fields.client_id
                s.flush()
            s.expunge(reg)
            return reg
    return _install_without_token(engine, app_id, doc, existing, device_id)


def _install_without_token(
    engine: Engine,
    app_id: str,
    doc: CmEvent,
    existing: Registration | None,
    device_id: str | None,
) -> Registration:
    fields = installation_fields(doc.profile)
    try:
        phone = normalise_phone(fields.phone_number) if fields.phone_number else None
    except InvalidRequest as exc:
        raise _renamed(exc) from None
    with session_scope(engine) as s:
        reg = s.get(Registration, existing.id) if existing is not None else None
        if reg is None:
            if fields.provider is None or fields.platform is None:
                raise _bad(
                    "event.custom.deviceOs", "required for an installation Pushline does not know"
                )
            # No token yet: the installation exists, its deliveries end with code 5.
            reg = Registration(
                app_id=app_id,
                provider=fields.provider,
                platform=fields.platform,
                token=None,
                device_id=device_id,
            )
        elif fields.provider is not None and fields.provider != reg.provider:
            # The device moved platform: its old token belongs to the other provider.
            reg.provider, reg.token = fields.provider, None
        if fields.platform is not None:
            reg.platform = fields.platform
        for name, value in fields.values.items():
            setattr(reg, name, value)
        if phone is not None:
            reg.phone_number = phone
        if fields.client_id is not None:
            reg.client_id = fields.client_id
        if not reg.active and reg.deactivated_code is None:
            # ClientUnregistered left it so; a token the provider retired stays retired.
            reg.active, reg.deactivated_at = True, None
        reg.updated_at = utcnow()
        s.add(reg)
        s.flush()
        s.refresh(reg)
        s.expunge(reg)
        return reg


def unregister(engine: Engine, app_id: str, doc: CmEvent) -> Registration:
    """Deactivate the installation, keeping the identifiers the event gives (clientId,
    msisdn), so the outbound ClientUnregistered carries them."""
    existing = _find(engine, app_id, doc.installation_id)
    if existing is None:
        raise NotFound(f"installation {doc.installation_id} not found")
    fields = installation_fields(doc.profile)
    try:
        phone = normalise_phone(fields.phone_number) if fields.phone_number else None
    except InvalidRequest as exc:
        raise _renamed(exc) from None
    with session_scope(engine) as s:
        reg = s.get(Registration, existing.id)
        assert reg is not None
        if phone is not None:
            reg.phone_number = phone
        if fields.client_id is not None:
            reg.client_id = fields.client_id
        if reg.active:
            now = utcnow()
            reg.active, reg.deactivated_at, reg.updated_at = False, now, now
            s.add(reg)
            s.flush()
        s.refresh(reg)
        s.expunge(reg)
        return reg


# --- the route --------------------------------------------------------------------------------


def handle(settings: Settings, engine: Engine, who: Caller, doc: CmEvent) -> CmEventAnswer:
    """Apply one event, then relay it to the app's webhooks."""
    kind = doc.event.type
    at = doc.timeUtc or utcnow()
    if kind in LIFECYCLE_TYPES:
        who.require(Role.ADMIN)
        reg = (
            unregister(engine, who.app_id, doc)
            if kind == CLIENT_UNREGISTERED
            else install(engine, who.app_id, doc)
        )
        emit_installation(settings, engine, who.app_id, kind, reg, at)
        return CmEventAnswer(
            type=kind,
            installationId=doc.installation_id,
            registrationId=reg.id,
            active=reg.active,
        )
    reference = doc.event.reference
    assert reference is not None  # parse_event requires it for engagement events
    status = ENGAGEMENT_STATUS[kind]
    # The event's time is when it happened on the device (the seed's timeUtc).
    if kind == MESSAGE_DISMISSED:
        row = record_dismissed(engine, who.app_id, reference, at)
    elif status is not None:
        row = report_engagement(engine, who.app_id, reference, status, at)
    else:
        row = record_deleted(engine, who.app_id, reference, at)
    emit(
        settings,
        engine,
        who.app_id,
        [engagement_document(kind, doc.installation_id, who.app_id, reference, at)],
    )
    return CmEventAnswer(
        type=kind, installationId=doc.installation_id, reference=reference, status=row.status
    )


def parse_body(raw: bytes, content_type: str | None) -> CmEvent:
    body = loads(raw, content_type)
    try:
        return parse_event(body)
    except DocumentError as exc:
        raise _bad(exc.field, exc.rule) from None


def _example(kind: str, custom: dict[str, Any] | None, reference: str | None) -> dict[str, Any]:
    event: dict[str, Any] = {"type": kind}
    if custom is not None:
        event["custom"] = custom
    if reference is not None:
        event["reference"] = reference
    return {
        "summary": kind,
        "value": {
            "from": {"number": "0b3fbd4a9e2e4d0e8f8e3c3b7f4f1a2b"},
            "to": {"number": "6a1f3c2e-0d4b-4c8e-9a7f-2b5e8c1d3f40"},
            "event": event,
            "timeUtc": "2022-06-01T17:08:45",
            "channel": "MobilePush",
        },
    }


_PROFILE = {
    "clientId": "com.cm.notifire",
    "clientVersion": "3.0.0",
    "msisdn": None,
    "deviceOs": "Android",
    "deviceOsVersion": "12",
    "deviceModel": "SM-A515F",
    "pushAuthorization": "Authorized",
    "preferredLanguages": ["nl"],
}
_REF = "5dbc0313-9031-4f4f-8dc8-5ab712b20722"
EXAMPLES = {
    "ClientInstalled": _example(CLIENT_INSTALLED, _PROFILE, None),
    "ClientUpdated": _example("ClientUpdated", {**_PROFILE, "msisdn": "0031612345678"}, None),
    "ClientUnregistered": _example(
        CLIENT_UNREGISTERED, {"clientId": "com.cm.notifire", "msisdn": "0031612345678"}, None
    ),
    "MessageDismissed": _example("MessageDismissed", None, _REF),
    "MessageOpened": _example("MessageOpened", None, _REF),
    "MessageDelete": _example("MessageDelete", None, _REF),
}


def router(settings: Settings, engine: Engine) -> APIRouter:
    # Imported here: producer.api mounts this module, so it is fully loaded by now.
    from producer.api import ERRORS

    api = APIRouter(tags=["CM.com"])

    @api.post(
        PATH,
        response_model=CmEventAnswer,
        responses=ERRORS,
        openapi_extra=json_body(CmEvent, EXAMPLES),
    )
    async def cm_event(request: Request, who: CallerDep) -> CmEventAnswer:
        """One CM push event document. GUIDs with or without hyphens. Lifecycle events
        (ClientInstalled / ClientUpdated / ClientUnregistered) need the role admin;
        MessageOpened → CONSUMED, MessageDismissed → RECEIVED, MessageDelete records the
        deletion; statuses never move backwards, QUEUED / ERROR deliveries answer 409.
        `custom.pushToken` (optional) carries the device's APNs / FCM token."""
        doc = parse_body(await request.body(), request.headers.get("content-type"))
        return await run_in_threadpool(handle, settings, engine, who, doc)

    return api
