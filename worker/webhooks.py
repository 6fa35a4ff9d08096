"""Outbound webhooks: CM-shaped event documents POSTed, signed, to the URLs apps subscribed.

Two halves, both kept off the delivery path's critical work:
- `delivery_outcomes` runs after a chunk's outcomes are in SQL (worker/events.py). For apps
  with a subscription (a per-process cache, no SQL per chunk otherwise) it builds
  MessageSent / MessageFailed documents and enqueues one task per subscription per batch
  on the webhook queue. It never raises: a webhook problem must not fail a delivery.
- `post_batch` is that task's body: one signed POST; a non-2xx answer or a connection
  error is retried with exponential backoff up to `webhook_max_attempts`.
"""

from __future__ import annotations

import json
import time
import uuid
from collections import defaultdict
from collections.abc import Callable, Sequence
from enum import StrEnum
from typing import Any

import httpx
import structlog
from celery import Celery
from sqlalchemy import Engine, select
from sqlalchemy.exc import SQLAlchemyError
from sqlmodel import Session, col

from schemas import process
from schemas.cm import (
    BATCH_HEADER,
    SIGNATURE_HEADER,
    TIMESTAMP_HEADER,
    Subscription,
    installation_id_of,
    outcome_document,
    plan_posts,
    retired_document,
    retry_delay_s,
    signature,
)
from schemas.db import engine_for, session_scope
from schemas.logs import safe_url
from schemas.metrics import WEBHOOK_ATTEMPTS
from schemas.queueing import WEBHOOK_QUEUE, WEBHOOK_TASK, celery_config
from schemas.settings import Settings
from schemas.subscriptions import subscriptions
from schemas.tables import Registration, Webhook, WebhookPost, WebhookPostSubject, utcnow
from worker.outcomes import DEACTIVATING
from worker.store import ClaimedDelivery, Record

log = structlog.get_logger("pushline.webhooks")

_http: tuple[int, httpx.Client] | None = None
_celery: tuple[int, Celery] | None = None


def _subscriptions(settings: Settings, app_id: str) -> list[Subscription]:
    return subscriptions(engine_for(settings.database_url), app_id, settings.webhook_cache_s)


def _client(settings: Settings) -> Celery:
    global _celery
    if _celery is None or _celery[0] != process.pid():  # broker sockets do not survive fork
        app = Celery("pushline-webhooks")
        app.conf.update(celery_config(settings))
        _celery = (process.pid(), app)
    return _celery[1]


def enqueue(settings: Settings, app_id: str, documents: Sequence[dict[str, Any]]) -> int:
    """One task per (subscription, batch) of the documents it wants; returns tasks sent."""
    posts = plan_posts(_subscriptions(settings, app_id), documents, settings.webhook_batch_size)
    for webhook_id, batch in posts:
        _client(settings).send_task(
            WEBHOOK_TASK, args=[webhook_id, batch, uuid.uuid4().hex, 1], queue=WEBHOOK_QUEUE
        )
    return len(posts)


def delivery_outcomes(
    settings: Settings, claimed: Sequence[ClaimedDelivery], finals: Sequence[Record]
) -> None:
    """MessageSent / MessageFailed for a recorded chunk, to the apps that subscribed, and
    ClientUnregistered for installations this chunk retired (codes 6 and 7)."""
    try:
        by_id = {c.id: c for c in claimed}
        per_app: dict[str, list[tuple[ClaimedDelivery, Record]]] = defaultdict(list)
        for f in finals:
            c = by_id.get(f.id)
            # A cancelled Delivery was neither sent nor failed: CM has no event for it.
            if c is not None and f.code is not None:
                per_app[c.app_id].append((c, f))
        wanted = {a: rows for a, rows in per_app.items() if _subscriptions(settings, a)}
        if not wanted:
            return
        installs = _installations(
            engine_for(settings.database_url),
            {c.registration_id for rows in wanted.values() for c, _ in rows},
        )
        now = utcnow()
        for app_id, rows in wanted.items():
            docs: list[dict[str, Any]] = []
            for c, f in rows:
                assert f.code is not None  # cancelled rows were left out above
                device_id, phone, client_id = installs.get(c.registration_id, (None, None, None))
                installation = installation_id_of(c.registration_id, device_id)
                docs.append(
                    outcome_document(
                        delivery_id=c.id,
                        message_id=c.message_id,
                        installation_id=installation,
                        app_id=app_id,
                        status=f.status,
                        code=f.code,
                        message=f.provider_message,
                        at=now,
                    )
                )
                if c.registration_active and f.code in DEACTIVATING:
                    docs.append(retired_document(installation, app_id, phone, client_id, now))
            enqueue(settings, app_id, docs)
    except Exception as exc:  # noqa: BLE001 (a webhook must never fail a delivery)
        log.warning("could not enqueue delivery events", error=str(exc))


def _installations(
    engine: Engine, registration_ids: set[str]
) -> dict[str, tuple[str | None, str | None, str | None]]:
    """One query per chunk: device id (the installation id), phone and CM clientId of each
    registration."""
    ids = [i for i in registration_ids if i]
    if not ids:
        return {}
    with Session(engine) as s:
        rows = s.execute(
            select(
                col(Registration.id),
                col(Registration.device_id),
                col(Registration.phone_number),
                col(Registration.client_id),
            ).where(col(Registration.id).in_(ids))
        ).all()
    return {r[0]: (r[1], r[2], r[3]) for r in rows}


class PostOutcome(StrEnum):
    DELIVERED = "delivered"
    RETRYING = "retrying"
    GAVE_UP = "gave_up"
    DROPPED = "dropped"  # the subscription was deleted or disabled meanwhile


def _http_client() -> httpx.Client:
    global _http
    if _http is None or _http[0] != process.pid():
        _http = (process.pid(), httpx.Client(follow_redirects=False))
    return _http[1]


def post_batch(
    settings: Settings,
    engine: Engine,
    webhook_id: str,
    documents: list[dict[str, Any]],
    batch_id: str,
    attempt: int,
    retry_later: Callable[[float], None],
) -> PostOutcome:
    """POST one batch (a JSON array of event documents), signed; schedule a retry on failure."""
    outcome, failure = _post_batch(
        settings, engine, webhook_id, documents, batch_id, attempt, retry_later
    )
    WEBHOOK_ATTEMPTS.labels(outcome.value).inc()
    if outcome != PostOutcome.DROPPED:
        try:
            record_post(engine, webhook_id, batch_id, attempt, outcome, documents, failure)
        except SQLAlchemyError as exc:  # the story loses a line; the webhook itself went out
            log.warning(
                "webhook post not recorded", webhook=webhook_id, error_type=type(exc).__name__
            )
    return outcome


def subjects(documents: list[dict[str, Any]]) -> set[str]:
    """The Messages and Deliveries a batch of CM-shaped events tells of."""
    out: set[str] = set()
    for doc in documents:
        event = doc.get("event") or {}
        custom = event.get("custom") or {}
        for value in (event.get("reference"), custom.get("messageId")):
            if isinstance(value, str) and len(value) <= 36:
                out.add(value)
    return out


def record_post(
    engine: Engine,
    webhook_id: str,
    batch_id: str,
    attempt: int,
    outcome: PostOutcome,
    documents: list[dict[str, Any]],
    failure: str | None,
) -> None:
    post = WebhookPost(
        webhook_id=webhook_id,
        batch_id=batch_id[:64],
        attempt=attempt,
        outcome=outcome.value,
        events=len(documents),
        error=failure[:200] if failure else None,
    )
    with session_scope(engine) as s:
        s.add(post)
        s.flush()
        s.add_all(WebhookPostSubject(post_id=post.id, subject_id=i) for i in subjects(documents))


def _post_batch(
    settings: Settings,
    engine: Engine,
    webhook_id: str,
    documents: list[dict[str, Any]],
    batch_id: str,
    attempt: int,
    retry_later: Callable[[float], None],
) -> tuple[PostOutcome, str | None]:
    with Session(engine) as s:
        hook = s.get(Webhook, webhook_id)
    if hook is None or hook.disabled_at is not None:
        return PostOutcome.DROPPED, None
    body = json.dumps(documents, separators=(",", ":")).encode()
    ts = int(time.time())
    headers = {
        "Content-Type": "application/json",
        "User-Agent": "Pushline-Webhooks/1",
        TIMESTAMP_HEADER: str(ts),
        SIGNATURE_HEADER: signature(hook.secret, ts, body),
        BATCH_HEADER: batch_id,
    }
    try:
        answer = _http_client().post(
            hook.url, content=body, headers=headers, timeout=settings.webhook_timeout_s
        )
        failure = None if 200 <= answer.status_code < 300 else f"HTTP {answer.status_code}"
    except httpx.HTTPError as exc:
        failure = f"{type(exc).__name__}: {exc}"
    if failure is None:
        log.debug("webhook delivered", webhook=webhook_id, events=len(documents), attempt=attempt)
        return PostOutcome.DELIVERED, None
    if attempt >= settings.webhook_max_attempts:
        log.warning(
            "webhook gave up",
            webhook=webhook_id,
            url=safe_url(hook.url),
            events=len(documents),
            attempts=attempt,
            error=failure,
        )
        return PostOutcome.GAVE_UP, failure
    base = settings.webhook_retry_base_s
    delay = retry_delay_s(
        attempt, settings.retry_base_s if base is None else base, settings.webhook_retry_cap_s
    )
    log.warning(
        "webhook failed, will retry",
        webhook=webhook_id,
        url=safe_url(hook.url),
        attempt=attempt,
        delay_s=delay,
        error=failure,
    )
    retry_later(delay)
    return PostOutcome.RETRYING, failure
