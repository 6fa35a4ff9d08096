"""The producer's side of the Redis queue: it publishes tasks by name, never importing worker."""

from __future__ import annotations

from celery import Celery

from schemas.queueing import DELIVER_TASK, FANOUT_TASK, celery_config, queue_for
from schemas.settings import Settings

_clients: dict[str, Celery] = {}


def _client(settings: Settings) -> Celery:
    app = _clients.get(settings.redis_url)
    if app is None:
        app = Celery("pushline-producer")
        app.conf.update(celery_config(settings))
        _clients[settings.redis_url] = app
    return app


def enqueue_fanout(settings: Settings, message_id: str, lane: str = "bulk") -> None:
    """Raise on a broker that cannot take the task (after a short bounded retry)."""
    _client(settings).send_task(
        FANOUT_TASK, args=[message_id], queue=queue_for(lane, settings.priority_lane)
    )


def enqueue_deliveries(settings: Settings, ids: list[str], lane: str) -> None:
    """One deliver task carrying Deliveries of any number of Messages (same lane)."""
    _client(settings).send_task(
        DELIVER_TASK, args=[ids, lane], queue=queue_for(lane, settings.priority_lane)
    )
