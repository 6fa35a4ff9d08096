"""What the app reports after a send: RECEIVED, CONSUMED, CONFIRMED (SAP), and CM's
MessageDelete. Statuses only ever move forward (schemas.codes.engagement_moves)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Engine, update
from sqlmodel import Session, col

from producer.errors import Conflict, InvalidRequest, NotFound
from schemas.codes import ENGAGEMENT_STATUSES, DeliveryStatus, engagement_moves
from schemas.tables import Delivery, utcnow

_STAMP = {
    DeliveryStatus.RECEIVED: "received_at",
    DeliveryStatus.CONSUMED: "consumed_at",
    DeliveryStatus.CONFIRMED: "confirmed_at",
}


def report_engagement(
    engine: Engine, app_id: str, delivery_id: str, status: str, at: datetime | None = None
) -> Delivery:
    """Move the Delivery to `status` if that is forward; returns the row as it now stands.

    An earlier status reported late (CONSUMED after CONFIRMED) is accepted and changes
    nothing, so an app may report in any order. QUEUED or ERROR Deliveries are a 409: as
    far as Pushline knows nothing reached the device.
    """
    wanted = status.upper()
    if wanted not in ENGAGEMENT_STATUSES:
        allowed = ", ".join(sorted(ENGAGEMENT_STATUSES))
        raise InvalidRequest(
            f"status: must be one of {allowed}",
            [{"field": "status", "rule": f"one of {allowed}"}],
        )
    when = at or utcnow()
    with Session(engine) as s:
        row = s.get(Delivery, delivery_id)
        if row is None or row.app_id != app_id:
            raise NotFound(f"delivery {delivery_id} not found")
        current = row.status
        if current in (DeliveryStatus.QUEUED, DeliveryStatus.ERROR):
            raise Conflict(
                f"delivery {delivery_id} is {current}: only a sent notification can be "
                f"reported {wanted}"
            )
        values: dict[str, object] = {_STAMP[DeliveryStatus(wanted)]: when, "updated_at": when}
        stmt = update(Delivery).where(
            col(Delivery.id) == delivery_id, col(Delivery.status) == current
        )
        if engagement_moves(current, wanted):
            values["status"] = wanted
        else:  # already further along: keep the first time it was seen, change nothing else
            stmt = stmt.where(getattr(Delivery, _STAMP[DeliveryStatus(wanted)]).is_(None))
        s.execute(stmt.values(**values))
        s.commit()
        s.refresh(row)
        return row


def record_deleted(
    engine: Engine, app_id: str, delivery_id: str, at: datetime | None = None
) -> Delivery:
    """The user deleted the notification in the app: kept as a time, never as a status."""
    return _stamp(engine, app_id, delivery_id, "deleted_at", at)


def record_dismissed(
    engine: Engine, app_id: str, delivery_id: str, at: datetime | None = None
) -> Delivery:
    """The user swiped the notification away (CM MessageDismissed): it reached the device,
    so RECEIVED, and the dismissal is kept as a time of its own, the first one standing."""
    report_engagement(engine, app_id, delivery_id, DeliveryStatus.RECEIVED, at)
    return _stamp(engine, app_id, delivery_id, "dismissed_at", at)


def _stamp(
    engine: Engine, app_id: str, delivery_id: str, column: str, at: datetime | None
) -> Delivery:
    """Set a report's time on the Delivery unless one is there already."""
    when = at or utcnow()
    with Session(engine) as s:
        row = s.get(Delivery, delivery_id)
        if row is None or row.app_id != app_id:
            raise NotFound(f"delivery {delivery_id} not found")
        s.execute(
            update(Delivery)
            .where(col(Delivery.id) == delivery_id, getattr(Delivery, column).is_(None))
            .values({column: when, "updated_at": when})
        )
        s.commit()
        s.refresh(row)
        return row
