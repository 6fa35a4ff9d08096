"""The naive baseline: one Celery task per device, each opening its own provider client.

Run as its own worker (`celery -A bench.naive worker --concurrency 2 --pool prefork`) on a
Redis db of its own. It uses Pushline's Celery settings and payload builders, so what
differs from Pushline is only the task granularity and the client lifetime (DESIGN.md §5).
It writes nothing to the database, which flatters it: Pushline/naive ratios are lower bounds.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import uuid
from typing import Any

import firebase_admin
import redis
from celery import Celery
from firebase_admin import credentials, messaging
from py_vapid import Vapid02
from pywebpush import webpush

from schemas.queueing import celery_config
from schemas.settings import Settings
from schemas.tables import App
from worker.apns import ApnsSender
from worker.fcm import point_at, to_message
from worker.payloads import build_apns, build_fcm, build_webpush, webpush_plaintext

BROKER_ENV = "PUSHLINE_BENCH_NAIVE_REDIS_URL"
QUEUE = "bench-naive"
TASK = "bench.naive.send"
# Each task counts itself done here, so the benchmark can poll one cheap key instead of the
# simulators' stats (whose per-token maps grow with every send).
DONE_KEY = "bench-naive:done"
OK_KEY = "bench-naive:ok"  # answered 200 (the provider may be the fake, which counts nothing)


def make_app(broker_url: str) -> Celery:
    # Pushline's own queueing settings (acks late, prefetch 1), on another broker db.
    settings = Settings().model_copy(update={"redis_url": broker_url})
    celery = Celery("pushline-bench-naive")
    celery.conf.update(celery_config(settings))
    celery.conf.update(task_default_queue=QUEUE)
    return celery


_broker_url = os.environ.get(BROKER_ENV, "redis://127.0.0.1:6379/6")
app = make_app(_broker_url)
_settings = Settings()
_counter: redis.Redis | None = None
_counter_pid = 0


def _count_done(status: int) -> None:  # 201 is Web Push's 200
    status = 200 if status == 201 else status
    global _counter, _counter_pid
    if _counter is None or _counter_pid != os.getpid():  # never share a socket across fork
        _counter, _counter_pid = redis.Redis.from_url(_broker_url), os.getpid()
    if status == 200:
        _counter.incr(OK_KEY)
    _counter.incr(DONE_KEY)


@app.task(name=TASK)
def send(provider: str, token: str, creds: dict[str, str], payload: dict[str, Any]) -> int:
    """Send one notification with a client built for this task alone; returns the status."""
    status = -1
    try:
        if provider == "webpush":
            status = _webpush_once(token, creds, payload)
            return status
        once = _apns_once if provider == "apns" else _fcm_once
        status = asyncio.run(once(token, creds, payload))
        return status
    finally:
        _count_done(status)


async def _apns_once(token: str, creds: dict[str, str], payload: dict[str, Any]) -> int:
    app_row = App(
        id=creds["app_id"],
        name="naive",
        apns_topic=creds["apns_topic"],
        apns_key_pem=creds["apns_key_pem"],
        apns_key_id=creds["apns_key_id"],
        apns_team_id=creds["apns_team_id"],
    )
    sender = ApnsSender(app_row, _settings)  # a new aioapns APNs: new TLS, new JWT
    try:
        answer = await sender.send(token, str(uuid.uuid4()), build_apns(payload))
    finally:
        sender.close()
    return answer.status or -1


async def _fcm_once(token: str, creds: dict[str, str], payload: dict[str, Any]) -> int:
    point_at(_settings.fcm_url)
    info = json.loads(creds["fcm_service_account"])
    # A new firebase app per task: new credentials, a new OAuth token, a new HTTP client.
    fb = firebase_admin.initialize_app(credentials.Certificate(info), name=f"naive-{uuid.uuid4()}")
    try:
        result = await messaging.send_each_async([to_message(token, build_fcm(payload))], app=fb)
    finally:
        # firebase-admin closes its client with asyncio.run, which refuses to run inside
        # this loop; the app is unregistered first, and the client goes with the task.
        with contextlib.suppress(RuntimeError):
            firebase_admin.delete_app(fb)
    return 200 if result.success_count else -1


def _webpush_once(token: str, creds: dict[str, str], payload: dict[str, Any]) -> int:
    """pywebpush's `webpush()` as its README shows it: a new VAPID signature and a new
    HTTP connection (requests, trusting $REQUESTS_CA_BUNDLE) for this task alone."""
    sub = {
        "endpoint": token,
        "keys": {"p256dh": creds["webpush_p256dh"], "auth": creds["webpush_auth"]},
    }
    resp = webpush(
        sub,
        webpush_plaintext(build_webpush(payload)).decode(),
        vapid_private_key=Vapid02.from_pem(creds["webpush_private_key_pem"].encode()),
        vapid_claims={"sub": creds["webpush_subject"]},
        ttl=60,
        timeout=10,
    )
    return int(getattr(resp, "status_code", -1))
