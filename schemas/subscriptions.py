"""Which webhook subscriptions an app has: read by the API (installation and engagement
events) and by the worker (delivery outcomes), remembered a few seconds per process so the
delivery path asks SQL at most once per app every `webhook_cache_s`."""

from __future__ import annotations

import time

from sqlalchemy import Engine, select
from sqlmodel import Session, col

from schemas.cm import Subscription, SubscriptionCache
from schemas.tables import Webhook

_caches: dict[int, SubscriptionCache] = {}


def load_subscriptions(engine: Engine, app_id: str) -> list[Subscription]:
    with Session(engine) as s:
        rows = s.execute(
            select(col(Webhook.id), col(Webhook.events)).where(
                col(Webhook.app_id) == app_id, col(Webhook.disabled_at).is_(None)
            )
        ).all()
    return [Subscription(webhook_id=r[0], events=r[1]) for r in rows]


def subscriptions(engine: Engine, app_id: str, ttl_s: float) -> list[Subscription]:
    cache = _caches.get(id(engine))
    if cache is None:
        cache = SubscriptionCache(lambda a: load_subscriptions(engine, a), ttl_s, time.monotonic)
        _caches[id(engine)] = cache
    return cache.get(app_id)


def forget_subscriptions(engine: Engine, app_id: str) -> None:
    """After a change through this process's API, see it at once."""
    cache = _caches.get(id(engine))
    if cache is not None:
        cache.forget(app_id)
