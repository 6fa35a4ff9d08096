"""Webhook subscriptions (native routes `/v1/webhooks`, role admin) and the producer's side of
emitting CM-shaped events (installation lifecycle, engagement) to them.

Mounted like a surface so it lives in its own module, but `owns` is False: its errors take
the native shape. Emitting only enqueues on the webhook queue (worker/webhooks.py POSTs,
signs and retries); it never fails the request that caused the event.
"""

from __future__ import annotations

import secrets
import uuid
from collections.abc import Sequence
from datetime import datetime
from typing import Annotated, Any
from urllib.parse import urlsplit

import structlog
from fastapi import APIRouter, Response
from fastapi.responses import JSONResponse
from pydantic import BaseModel, ConfigDict, Field, field_validator
from sqlalchemy import Engine, select
from sqlmodel import Session, col

from producer.auth import CallerDep
from producer.bodies import json_body, json_model
from producer.enqueue import _client as celery_client
from producer.errors import InvalidRequest, NotFound, PushlineError
from schemas.cm import (
    OUTBOUND_TYPES,
    DocumentError,
    RegistrationLike,
    lifecycle_document,
    parse_event_filter,
    plan_posts,
    view_of,
)
from schemas.codes import Role
from schemas.db import session_scope
from schemas.queueing import WEBHOOK_QUEUE, WEBHOOK_TASK
from schemas.settings import Settings
from schemas.subscriptions import forget_subscriptions, subscriptions
from schemas.tables import Webhook, utcnow

log = structlog.get_logger("pushline.webhooks")


# --- models -----------------------------------------------------------------------------------


class WebhookIn(BaseModel):
    """Subscribe a URL to an app's events. Without `secret` Pushline makes one (shown once)."""

    model_config = ConfigDict(
        extra="forbid",
        json_schema_extra={
            "examples": [
                {
                    "url": "https://hooks.example.com/pushline",
                    "secret": "a-long-random-shared-secret",
                    "events": ["ClientInstalled", "MessageFailed"],
                }
            ]
        },
    )

    url: Annotated[str, Field(min_length=8, max_length=2000)]
    secret: Annotated[str, Field(min_length=16, max_length=200)] | None = None
    events: list[str] = Field(
        default_factory=lambda: ["*"],
        description=f"event types to receive, or * (default) for all: {', '.join(OUTBOUND_TYPES)}",
    )

    @field_validator("url")
    @classmethod
    def _http_url(cls, url: str) -> str:
        parts = urlsplit(url)
        if parts.scheme not in ("http", "https") or not parts.hostname:
            raise ValueError("an absolute http:// or https:// URL")
        return url


class WebhookOut(BaseModel):
    id: str
    url: str
    events: list[str]
    created_at: datetime


class WebhookCreated(WebhookOut):
    secret: str  # only in the answer to the create request; never listed again


class WebhookPage(BaseModel):
    items: list[WebhookOut]


def _out(hook: Webhook) -> WebhookOut:
    return WebhookOut(
        id=hook.id, url=hook.url, events=hook.events.split(","), created_at=hook.created_at
    )


# --- subscriptions and emitting ---------------------------------------------------------------


def emit(
    settings: Settings, engine: Engine, app_id: str, documents: Sequence[dict[str, Any]]
) -> int:
    """Enqueue CM event documents for every subscription of the app that wants them.

    Best effort: the change that caused the events is already committed, so a broker
    problem is logged, not raised. Returns the number of tasks enqueued.
    """
    sent = 0
    try:
        subs = subscriptions(engine, app_id, settings.webhook_cache_s)
        for webhook_id, batch in plan_posts(subs, documents, settings.webhook_batch_size):
            celery_client(settings).send_task(
                WEBHOOK_TASK, args=[webhook_id, batch, uuid.uuid4().hex, 1], queue=WEBHOOK_QUEUE
            )
            sent += 1
    except Exception as exc:  # noqa: BLE001 (an event must never fail the request behind it)
        log.warning("could not enqueue webhook events", app=app_id, error=str(exc))
    return sent


def emit_installation(
    settings: Settings,
    engine: Engine,
    app_id: str,
    event_type: str,
    reg: RegistrationLike,
    at: datetime | None = None,
    client_id: str | None = None,
) -> int:
    """ClientInstalled / ClientUpdated / ClientUnregistered for a registration, from any
    route that creates, changes or retires one."""
    doc = lifecycle_document(event_type, view_of(reg), app_id, at or utcnow(), client_id)
    return emit(settings, engine, app_id, [doc])


# --- routes -----------------------------------------------------------------------------------


def owns(path: str) -> bool:
    return False  # native routes: the app-wide handler answers errors in the native shape


def error_response(exc: PushlineError) -> JSONResponse:
    content: dict[str, Any] = {"error": exc.kind, "message": exc.message, "details": exc.details}
    return JSONResponse(status_code=exc.status, content=content)


def router(settings: Settings, engine: Engine) -> APIRouter:
    # Imported here: producer.api mounts this module, so it is fully loaded by now.
    from producer.api import ERRORS

    api = APIRouter(tags=["webhooks"])

    @api.post(
        "/v1/webhooks",
        response_model=WebhookCreated,
        status_code=201,
        responses=ERRORS,
        openapi_extra=json_body(WebhookIn),
    )
    def create_webhook(
        body: Annotated[WebhookIn, json_model(WebhookIn)], who: CallerDep
    ) -> WebhookCreated:
        """Subscribe a URL to CM-shaped events: ClientInstalled / ClientUpdated /
        ClientUnregistered, MessageOpened / MessageDismissed / MessageDelete, and Pushline's
        MessageSent / MessageFailed (custom.code = the result code). Each POST carries a
        JSON array of event documents, signed with `X-Pushline-Signature`."""
        who.require(Role.ADMIN)
        try:
            events = parse_event_filter(body.events)
        except DocumentError as exc:
            raise InvalidRequest(str(exc), [{"field": exc.field, "rule": exc.rule}]) from None
        secret = body.secret or secrets.token_urlsafe(32)
        with session_scope(engine) as s:
            hook = Webhook(app_id=who.app_id, url=body.url, secret=secret, events=events)
            s.add(hook)
            s.flush()
            out = WebhookCreated(**_out(hook).model_dump(), secret=secret)
        forget_subscriptions(engine, who.app_id)
        return out

    @api.get("/v1/webhooks", response_model=WebhookPage, responses=ERRORS)
    def list_webhooks(who: CallerDep) -> WebhookPage:
        who.require(Role.ADMIN)
        with Session(engine) as s:
            rows = s.execute(
                select(Webhook)
                .where(col(Webhook.app_id) == who.app_id, col(Webhook.disabled_at).is_(None))
                .order_by(col(Webhook.created_at), col(Webhook.id))
            ).scalars()
            return WebhookPage(items=[_out(h) for h in rows])

    @api.delete("/v1/webhooks/{webhook_id}", status_code=204, responses=ERRORS)
    def delete_webhook(webhook_id: str, who: CallerDep) -> Response:
        who.require(Role.ADMIN)
        with session_scope(engine) as s:
            hook = s.get(Webhook, webhook_id)
            if hook is None or hook.app_id != who.app_id:
                raise NotFound(f"webhook {webhook_id} not found")
            s.delete(hook)
        forget_subscriptions(engine, who.app_id)
        return Response(status_code=204)

    return api
