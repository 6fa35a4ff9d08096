"""The Celery app: two tasks, fan-out and deliver, on Redis.

Run it with `pushline worker` (= `celery -A worker.celery_app worker`).
"""

from __future__ import annotations

from typing import Any

from celery import Celery, signals

from schemas.db import engine_for
from schemas.logs import configure_logging
from schemas.queueing import DEFAULT_QUEUE, DELIVER_TASK, FANOUT_TASK, celery_config
from schemas.settings import get_settings
from worker.deliver import deliver_chunk
from worker.fanout import fan_out

settings = get_settings()
app = Celery("pushline")
app.conf.update(celery_config(settings))


@signals.setup_logging.connect
def _logging(**_: Any) -> None:
    configure_logging(settings.log_level, settings.log_json)


@signals.worker_process_init.connect
def _fresh_process(**_: Any) -> None:
    # A forked child must not share its parent's database connections.
    engine_for(settings.database_url).dispose(close=False)


def _enqueue_chunk(provider: str, ids: list[str]) -> None:
    deliver.apply_async(args=[ids], queue=DEFAULT_QUEUE)


def _enqueue_retry(ids: list[str], delay_s: float) -> None:
    deliver.apply_async(args=[ids], countdown=delay_s, queue=DEFAULT_QUEUE)


@app.task(name=FANOUT_TASK)
def fanout(message_id: str) -> int:
    return fan_out(
        message_id,
        settings=settings,
        engine=engine_for(settings.database_url),
        enqueue_chunk=_enqueue_chunk,
    )


@app.task(name=DELIVER_TASK)
def deliver(delivery_ids: list[str]) -> int:
    report = deliver_chunk(
        delivery_ids,
        settings=settings,
        engine=engine_for(settings.database_url),
        enqueue_retry=_enqueue_retry,
    )
    return report.claimed
