"""The Celery app: fan-out and deliver tasks on Redis, in two lanes (queues).

Run it with `pushline worker` (= `celery -A worker.celery_app worker`); `-Q pushline` for
campaigns, `-Q pushline.priority` for one-device / one-user pushes, both by default.
"""

from __future__ import annotations

import json
import time
from datetime import datetime
from typing import Any

import structlog
from celery import Celery, signals
from sqlalchemy import Engine
from sqlalchemy.exc import InterfaceError, OperationalError

from schemas.db import engine_for
from schemas.heap import settle_heap
from schemas.logs import configure_logging
from schemas.queueing import (
    DELIVER_TASK,
    FANOUT_TASK,
    WEBHOOK_QUEUE,
    WEBHOOK_TASK,
    celery_config,
    queue_for,
)
from schemas.settings import get_settings
from worker.deliver import deliver_chunk
from worker.fanout import fan_out
from worker.webhooks import post_batch

settings = get_settings()
# Now, not only on Celery's setup_logging signal: Celery warns (running as root, say)
# before it sends that signal, and those lines must be JSON too.
configure_logging(settings.log_level, settings.log_json)
app = Celery("pushline")
app.conf.update(celery_config(settings))


@signals.setup_logging.connect
def _logging(**_: Any) -> None:
    configure_logging(settings.log_level, settings.log_json)


@signals.worker_init.connect
def _say_as_log_lines(**_: Any) -> None:
    """Celery prints its shutdown notices outside logging; make them log lines too."""
    import celery.apps.worker as celery_worker

    say = structlog.get_logger("celery.worker")
    celery_worker.safe_say = lambda msg, *_: say.info(str(msg).strip())


@signals.worker_ready.connect
def _alive(sender: Any = None, **_: Any) -> None:
    """Beat for the queues this worker consumes; serve /health and /metrics when asked."""
    from worker.liveness import Heartbeat, serve

    queues = [q.name for q in sender.task_consumer.queues]
    heartbeat = Heartbeat(settings, "worker", sender.hostname, queues).start()
    # A clean stop takes the beat away: the scheduler then has nothing to recover from it.
    signals.worker_shutdown.connect(lambda **_: heartbeat.stop(), weak=False)
    if settings.metrics_port:
        serve(settings.metrics_port, heartbeat.health)


@signals.worker_process_shutdown.connect
def _done_holding(**_: Any) -> None:
    from worker.liveness import done_holding

    done_holding()


@signals.worker_process_init.connect
def _fresh_process(**_: Any) -> None:
    # A forked child must not share its parent's database connections.
    engine_for(settings.database_url).dispose(close=False)
    delivery_engine().dispose(close=False)
    settle_heap()


def delivery_engine() -> Engine:
    """The fan-out and deliver tasks' engine: no ping per checkout, since both retry on a
    store error (STORE_RETRY)."""
    return engine_for(settings.database_url, pre_ping=False)


def enqueue_fanout(message_id: str, lane: str) -> None:
    fanout.apply_async(args=[message_id], queue=queue_for(lane, settings.priority_lane))


def enqueue_chunk(provider: str, ids: list[str], lane: str) -> None:
    deliver.apply_async(args=[ids, lane], queue=queue_for(lane, settings.priority_lane))


def restore_unacked(before: float, queues: frozenset[str]) -> int:
    """Hand out again, at the head of their queues, the tasks of `queues` that workers
    took from the broker before `before` (Unix time) and never acknowledged, except those
    waiting for a countdown still to come; returns how many.

    kombu keeps such a task until its visibility timeout (an hour) in case its worker
    died. The scheduler calls this once it knows a worker of those queues did. A task of a
    live worker restored with it runs twice, which costs a claim and never sends twice
    (its rows are leased or final); one waiting for its countdown (a retry's backoff, a
    quiet-hours hold) is left alone, so it never runs early.
    """
    restored = 0
    with app.connection_for_write() as conn:
        channel: Any = conn.default_channel
        qos = channel.qos
        with channel.conn_or_acquire() as client:
            tags = client.zrange(qos.unacked_index_key, before, 0, desc=True, byscore=True)
            for tag in tags:
                raw = client.hget(qos.unacked_key, tag)
                if raw is not None and lost_with_its_worker(raw, queues, time.time()):
                    qos.restore_by_tag(tag, client)
                    restored += 1
    return restored


def lost_with_its_worker(raw: bytes | str, queues: frozenset[str], now: float) -> bool:
    """Whether an unacknowledged task (kombu's [message, exchange, routing key]) is of
    `queues` and due: no countdown, or one already past."""
    try:
        message, _, routing_key = json.loads(raw)
        eta = (message.get("headers") or {}).get("eta")
    except (ValueError, TypeError, AttributeError):
        return False
    if routing_key not in queues:
        return False
    return eta is None or datetime.fromisoformat(eta).timestamp() <= now


# The SQL store away for a moment (a restart, a failover): try the task again shortly
# rather than drop it and wait for the recovery sweep. Rows are claimed with leases and
# outcomes recorded as they arrive, so a retry re-sends at most what was in flight.
STORE_RETRY: dict[str, Any] = {
    "autoretry_for": (OperationalError, InterfaceError),
    "retry_backoff": 1,
    "retry_backoff_max": 30,
    "retry_jitter": True,
    "max_retries": 30,
}


@app.task(name=FANOUT_TASK, **STORE_RETRY)
def fanout(message_id: str) -> int:
    return fan_out(
        message_id,
        settings=settings,
        engine=delivery_engine(),
        enqueue_chunk=enqueue_chunk,
    )


@app.task(name=DELIVER_TASK, **STORE_RETRY)
def deliver(delivery_ids: list[str], lane: str = "bulk") -> int:
    def retry_later(ids: list[str], delay_s: float) -> None:
        deliver.apply_async(
            args=[ids, lane], countdown=delay_s, queue=queue_for(lane, settings.priority_lane)
        )

    report = deliver_chunk(
        delivery_ids,
        settings=settings,
        engine=delivery_engine(),
        enqueue_retry=retry_later,
    )
    return report.claimed


@app.task(name=WEBHOOK_TASK)
def webhook(webhook_id: str, documents: list[dict[str, Any]], batch_id: str, attempt: int) -> str:
    """POST one batch of CM-shaped events to a subscription (its own queue: never delays
    delivery); a failure re-enqueues the same batch with a growing countdown."""

    def retry_later(delay_s: float) -> None:
        webhook.apply_async(
            args=[webhook_id, documents, batch_id, attempt + 1],
            countdown=delay_s,
            queue=WEBHOOK_QUEUE,
        )

    return post_batch(
        settings,
        engine_for(settings.database_url),
        webhook_id,
        documents,
        batch_id,
        attempt,
        retry_later,
    ).value
