"""Reading what happened to a Message and its Deliveries."""

from __future__ import annotations

from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from producer.errors import NotFound
from schemas.api import DeliveryOut, DeliveryPage, LocalRelease, MessageStatus
from schemas.tables import QUEUED, Delivery, Message, MessageRelease, utcnow


def message_status(engine: Engine, app_id: str | None, message_id: str) -> MessageStatus:
    """`app_id` None is the operator's view (the CLI); the API always passes the caller's."""
    with Session(engine) as s:
        msg = s.get(Message, message_id)
        if msg is None or (app_id is not None and msg.app_id != app_id):
            raise NotFound(f"message {message_id} not found")
        rows = s.execute(
            select(col(Delivery.status), col(Delivery.code), func.count())
            .where(col(Delivery.message_id) == message_id)
            .group_by(col(Delivery.status), col(Delivery.code))
        ).all()
        groups: list[MessageRelease] = []
        if msg.local_time:
            groups = list(
                s.execute(
                    select(MessageRelease)
                    .where(col(MessageRelease.message_id) == message_id)
                    .order_by(col(MessageRelease.release_at))
                ).scalars()
            )
        releases = [
            LocalRelease(release_at=g.release_at, devices=g.devices, state=g.state, zones=g.zones)
            for g in groups
        ]
    by_status: dict[str, int] = {}
    by_code: dict[str, int] = {}
    for status, code, n in rows:
        by_status[status] = by_status.get(status, 0) + n
        if code is not None:
            by_code[str(code)] = by_code.get(str(code), 0) + n
    return MessageStatus(
        id=msg.id,
        app_id=msg.app_id,
        name=msg.name,
        labels=msg.labels or [],
        state=msg.state,
        code=msg.code,
        detail=msg.detail,
        total=msg.total,
        by_status=by_status,
        by_code=by_code,
        created_at=msg.created_at,
        dispatched_at=msg.dispatched_at,
        completed_at=msg.completed_at,
        local_time=msg.local_time,
        releases=releases,
    )


def list_deliveries(
    engine: Engine,
    app_id: str | None,
    message_id: str,
    *,
    status: str | None = None,
    cursor: str | None = None,
    limit: int = 100,
) -> DeliveryPage:
    message_status(engine, app_id, message_id)  # 404 for unknown or another app's message
    q = select(Delivery).where(col(Delivery.message_id) == message_id)
    if status:
        q = q.where(col(Delivery.status) == status)
    if cursor:
        q = q.where(col(Delivery.id) > cursor)
    q = q.order_by(col(Delivery.id)).limit(limit + 1)
    with Session(engine) as s:
        rows = list(s.execute(q).scalars())
    next_cursor = rows[limit - 1].id if len(rows) > limit else None
    return DeliveryPage(
        items=[DeliveryOut.model_validate(r) for r in rows[:limit]], next_cursor=next_cursor
    )


def get_delivery(engine: Engine, app_id: str | None, delivery_id: str) -> DeliveryOut:
    """`app_id` None is the operator's view (the console); the API passes the caller's."""
    with Session(engine) as s:
        d = s.get(Delivery, delivery_id)
    if d is None or (app_id is not None and d.app_id != app_id):
        raise NotFound(f"delivery {delivery_id} not found")
    return DeliveryOut.model_validate(d)


def leases_by_holder(engine: Engine) -> dict[str, int]:
    """How many QUEUED Deliveries each process holds a live lease on (host:pid)."""
    with Session(engine) as s:
        rows = s.execute(
            select(col(Delivery.leased_by), func.count())
            .where(
                col(Delivery.status) == QUEUED,
                col(Delivery.lease_until) >= utcnow(),
                col(Delivery.leased_by).is_not(None),
            )
            .group_by(col(Delivery.leased_by))
        ).all()
    return {str(holder): int(n) for holder, n in rows}
