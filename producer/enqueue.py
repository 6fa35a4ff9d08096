"""The producer's side of the Redis queue: it publishes tasks by name, never importing worker.

A task message is written as Celery's own publisher would write it (message protocol 2,
JSON, on kombu's Redis transport) with one LPUSH. Celery's `send_task` costs about eight
times that in CPU, a SMEMBERS of the exchange's bindings included, on every publish, and
a single-device push pays for a share of one. The worker consumes either alike; with task
events on, `send_task` publishes, for its task-sent event.
"""

from __future__ import annotations

import base64
import json
import os
import socket
import threading
from typing import Any

import redis
from celery import Celery
from redis.backoff import ExponentialBackoff
from redis.retry import Retry

from schemas.ids import uuid4_str
from schemas.queueing import DELIVER_TASK, FANOUT_TASK, celery_config, queue_for
from schemas.settings import Settings

_clients: dict[str, Celery] = {}
_brokers: dict[str, redis.Redis] = {}
_lock = threading.Lock()
# Celery's own rule for publishing (task_publish_retry_policy): two more tries within ~1 s.
_RETRY = Retry(ExponentialBackoff(cap=1.0, base=0.2), retries=2)
_NO_WORKFLOW = {"callbacks": None, "errbacks": None, "chain": None, "chord": None}


def _client(settings: Settings) -> Celery:
    app = _clients.get(settings.redis_url)
    if app is None:
        app = Celery("pushline-producer")
        app.conf.update(celery_config(settings))
        _clients[settings.redis_url] = app
    return app


def _broker(settings: Settings) -> redis.Redis:
    client = _brokers.get(settings.redis_url)
    if client is None:
        with _lock:
            client = _brokers.get(settings.redis_url)
            if client is None:
                client = _brokers[settings.redis_url] = redis.Redis.from_url(
                    settings.redis_url,
                    socket_connect_timeout=3,
                    socket_timeout=5,
                    retry=_RETRY,
                    retry_on_error=[redis.ConnectionError, redis.TimeoutError],
                )
    return client


def task_message(task: str, args: list[Any], queue: str) -> bytes:
    """The kombu Redis transport's envelope of a Celery protocol 2 message, as
    `send_task(task, args=args, queue=queue)` writes it (no eta, no result)."""
    task_id = uuid4_str()
    body = json.dumps([args, {}, _NO_WORKFLOW]).encode()
    message = {
        "body": base64.b64encode(body).decode(),
        "content-encoding": "utf-8",
        "content-type": "application/json",
        "headers": {
            "lang": "py",
            "task": task,
            "id": task_id,
            "shadow": None,
            "eta": None,
            "expires": None,
            "group": None,
            "group_index": None,
            "retries": 0,
            "timelimit": [None, None],
            "root_id": task_id,
            "parent_id": None,
            "argsrepr": _repr(args),
            "kwargsrepr": "{}",
            "origin": _ORIGIN,
            "ignore_result": None,
            "replaced_task_nesting": 0,
            "stamped_headers": None,
            "stamps": {},
        },
        "properties": {
            "correlation_id": task_id,
            "delivery_mode": 2,
            "delivery_info": {"exchange": "", "routing_key": queue},
            "priority": 0,
            "body_encoding": "base64",
            "delivery_tag": uuid4_str(),
        },
    }
    return json.dumps(message).encode()


_ORIGIN = f"gen{os.getpid()}@{socket.gethostname()}"


def _repr(args: list[Any]) -> str:
    """argsrepr: what Celery's logs and events show of the arguments, kept short (a deliver
    task carries up to 500 ids)."""
    text = repr(args)
    return text if len(text) <= 200 else text[:197] + "..."


def _publish(settings: Settings, task: str, args: list[Any], lane: str) -> int | None:
    """Raise on a broker that cannot take the task (after a short bounded retry). Returns
    how many tasks wait in the queue before it (None where not known)."""
    queue = queue_for(lane, settings.priority_lane)
    if settings.task_events:
        _client(settings).send_task(task, args=args, queue=queue)
        return None
    key = f"{settings.redis_key_prefix}{queue}"
    length = _broker(settings).lpush(key, task_message(task, args, queue))
    return int(length) - 1


def enqueue_fanout(settings: Settings, message_id: str, lane: str = "bulk") -> int | None:
    """Raise on a broker that cannot take the task (after a short bounded retry)."""
    return _publish(settings, FANOUT_TASK, [message_id], lane)


def enqueue_deliveries(settings: Settings, ids: list[str], lane: str) -> int | None:
    """One deliver task carrying Deliveries of any number of Messages (same lane); returns
    how many tasks wait in the queue before it (None where not known)."""
    return _publish(settings, DELIVER_TASK, [ids, lane], lane)
