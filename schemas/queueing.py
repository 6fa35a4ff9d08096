"""Names and settings both sides of the Redis queue agree on."""

from __future__ import annotations

from typing import Any

from schemas.settings import Settings
from schemas.targets import is_transactional

FANOUT_TASK = "pushline.fanout"
DELIVER_TASK = "pushline.deliver"
DEFAULT_QUEUE = "pushline"  # campaigns: application, topics, many users
PRIORITY_QUEUE = "pushline.priority"  # one device or one user at high priority
SCHEDULER_TICK_TASK = "pushline.scheduler_tick"
WEBHOOK_TASK = "pushline.webhook"
# Webhook POSTs wait on other people's servers: never in the delivery queues.
WEBHOOK_QUEUE = "pushline.webhooks"


def lane_for(target: dict[str, Any], priority: str) -> str:
    """One device or one user at high priority is transactional: it gets its own queue, so
    a million-device campaign never delays it."""
    if priority != "high":
        return "bulk"
    return "priority" if is_transactional(target) else "bulk"


def progress_channel(settings: Settings, message_id: str) -> str:
    """Redis pub/sub channel the worker announces a Message's recorded outcomes on; the SAP
    push routes listen on it to answer with results without polling SQL."""
    return f"{settings.redis_key_prefix}pushline:progress:{message_id}"


#: How long a cancelled Message's flag stays in Redis: far longer than any task holds a
#: claim (lease_s). Afterwards the SQL state, read with every claim, still refuses it.
CANCELLED_FLAG_TTL_S = 86_400


def cancelled_key(settings: Settings, message_id: str) -> str:
    """Set when a Message is cancelled; sending workers poll it for what they are sending."""
    return f"{settings.redis_key_prefix}pushline:cancelled:{message_id}"


def queue_for(lane: str, lanes: bool = True) -> str:
    """`lanes=False` (PUSHLINE_PRIORITY_LANE=false) sends everything through one queue."""
    return PRIORITY_QUEUE if lanes and lane == "priority" else DEFAULT_QUEUE


def celery_config(settings: Settings) -> dict[str, Any]:
    url = redis_url_for_kombu(settings.redis_url)
    return {
        "broker_url": url,
        "task_serializer": "json",
        "accept_content": ["json"],
        "task_default_queue": DEFAULT_QUEUE,
        # A task is acknowledged after it ran: a worker that dies mid-chunk leaves the chunk
        # to be delivered again, and the chunk skips Deliveries already final.
        "task_acks_late": True,
        "task_reject_on_worker_lost": True,
        "worker_prefetch_multiplier": 1,
        "broker_transport_options": {
            "visibility_timeout": settings.visibility_timeout_s,
            # A chunk whose worker died is restored once its visibility timeout passes; kombu
            # only sweeps every interval x throttle seconds (100 s by default), so sweep often.
            "unacked_restore_interval": max(1, min(10, settings.visibility_timeout_s // 2)),
            "unacked_restore_throttle": 1,
            **(
                {"global_keyprefix": settings.redis_key_prefix} if settings.redis_key_prefix else {}
            ),
        },
        # Fail fast when the broker is down so the API can answer 503 instead of hanging.
        "broker_connection_timeout": 3,
        "broker_connection_retry_on_startup": True,
        "task_publish_retry": True,
        "task_publish_retry_policy": {
            "max_retries": 2,
            "interval_start": 0.2,
            "interval_step": 0.5,
            "interval_max": 1,
        },
        "result_backend": None,
        "task_ignore_result": True,
        "worker_hijack_root_logger": False,
        "worker_send_task_events": settings.task_events,
        "task_send_sent_event": settings.task_events,
        "broker_pool_limit": 10,
    }


def redis_url_for_kombu(url: str) -> str:
    # redis-py writes a unix socket as unix:///path; kombu spells it redis+socket:///path.
    if url.startswith("unix://"):
        return "redis+socket://" + url[len("unix://") :]
    return url
