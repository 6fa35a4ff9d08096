"""The worker's reads and writes: claim a chunk, record outcomes, close Messages. Bulk always."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import Engine, and_, bindparam, exists, func, or_, select, true, update
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.sqlite import insert as sqlite_insert
from sqlmodel import Session, col

from schemas.codes import DeliveryStatus, MessageState
from schemas.db import session_scope
from schemas.tables import Delivery, Message, Registration, new_id, table, utcnow


@dataclass(frozen=True, slots=True)
class ClaimedDelivery:
    id: str
    message_id: str
    app_id: str
    provider: str
    attempts: int
    token: str
    registration_id: str
    registration_active: bool
    deactivated_code: int | None
    # What the payload choice needs: bulk overrides by user, locale variants, iOS via FCM.
    platform: str | None = None
    username: str | None = None
    global_user_id: str | None = None
    locale: str | None = None
    preferred_languages: list[str] | None = None


@dataclass(frozen=True, slots=True)
class Record:
    """One Delivery's new state after an attempt."""

    id: str
    status: str
    code: int
    provider_message: str | None
    provider_ref: str | None
    sent: bool


def claim(
    engine: Engine, ids: Sequence[str], lease_s: int
) -> tuple[list[ClaimedDelivery], datetime | None]:
    """Take the QUEUED, unleased Deliveries among `ids` for this task.

    Returns the claimed rows and, when some rows are still leased by another task (one
    that may have died), when that lease ends — so the caller can look again then.
    A row already final is simply skipped: a redelivered chunk never re-sends it.
    """
    now = utcnow()
    with session_scope(engine) as s:
        free = and_(
            col(Delivery.id).in_(ids),
            col(Delivery.status) == DeliveryStatus.QUEUED,
            or_(col(Delivery.lease_until).is_(None), col(Delivery.lease_until) < now),
        )
        claimed_ids = list(
            s.execute(
                update(Delivery)
                .where(free)
                .values(
                    lease_until=now + timedelta(seconds=lease_s),
                    attempts=col(Delivery.attempts) + 1,
                    updated_at=now,
                )
                .returning(col(Delivery.id))
            ).scalars()
        )
        leased_until = s.execute(
            select(col(Delivery.lease_until))
            .where(
                col(Delivery.id).in_(ids),
                col(Delivery.status) == DeliveryStatus.QUEUED,
                col(Delivery.id).not_in(claimed_ids) if claimed_ids else true(),
            )
            .order_by(col(Delivery.lease_until).desc())
            .limit(1)
        ).scalar()
        rows = (
            s.execute(
                select(
                    col(Delivery.id),
                    col(Delivery.message_id),
                    col(Delivery.app_id),
                    col(Delivery.provider),
                    col(Delivery.attempts),
                    col(Registration.token),
                    col(Registration.id),
                    col(Registration.active),
                    col(Registration.deactivated_code),
                    col(Registration.platform),
                    col(Registration.username),
                    col(Registration.global_user_id),
                    col(Registration.locale),
                    col(Registration.preferred_languages),
                )
                .join(
                    Registration,
                    col(Registration.id) == col(Delivery.registration_id),
                    isouter=True,
                )
                .where(col(Delivery.id).in_(claimed_ids))
            ).all()
            if claimed_ids
            else []
        )
    claimed = [
        ClaimedDelivery(
            id=r[0],
            message_id=r[1],
            app_id=r[2],
            provider=r[3],
            attempts=r[4],
            token=r[5] or "",
            registration_id=r[6] or "",
            registration_active=bool(r[7]),
            deactivated_code=r[8],
            platform=r[9],
            username=r[10],
            global_user_id=r[11],
            locale=r[12],
            preferred_languages=r[13],
        )
        for r in rows
    ]
    return claimed, leased_until


def load_messages(engine: Engine, ids: Iterable[str]) -> dict[str, Message]:
    with Session(engine) as s:
        rows = s.execute(select(Message).where(col(Message.id).in_(list(ids)))).scalars()
        return {m.id: m for m in rows}


def record(
    engine: Engine,
    finals: Sequence[Record],
    retries: Sequence[tuple[str, int, str, datetime]],
    deactivate: Sequence[tuple[str, int]],
) -> None:
    """Write a chunk's outcomes in one transaction, a few executemany statements."""
    now = utcnow()
    # Core tables, not the ORM: a plain executemany is the fast path on both databases.
    d, r = table(Delivery).c, table(Registration).c
    with engine.begin() as s:
        if finals:
            s.execute(
                update(table(Delivery))
                .where(d.id == bindparam("b_id"), d.status == DeliveryStatus.QUEUED)
                .values(
                    status=bindparam("b_status"),
                    code=bindparam("b_code"),
                    provider_message=bindparam("b_msg"),
                    provider_ref=bindparam("b_ref"),
                    sent_at=bindparam("b_sent"),
                    lease_until=None,
                    updated_at=now,
                ),
                [
                    {
                        "b_id": f.id,
                        "b_status": f.status,
                        "b_code": f.code,
                        "b_msg": f.provider_message,
                        "b_ref": f.provider_ref,
                        "b_sent": now if f.sent else None,
                    }
                    for f in finals
                ],
            )
        if retries:
            s.execute(
                update(table(Delivery))
                .where(d.id == bindparam("b_id"), d.status == DeliveryStatus.QUEUED)
                .values(
                    code=bindparam("b_code"),
                    provider_message=bindparam("b_msg"),
                    next_attempt_at=bindparam("b_next"),
                    lease_until=None,
                    updated_at=now,
                ),
                [{"b_id": i, "b_code": c, "b_msg": m, "b_next": t} for i, c, m, t in retries],
            )
        if deactivate:
            s.execute(
                update(table(Registration))
                .where(r.id == bindparam("b_id"))
                .values(
                    active=False,
                    deactivated_code=bindparam("b_code"),
                    deactivated_at=now,
                    updated_at=now,
                ),
                [{"b_id": i, "b_code": c} for i, c in deactivate],
            )


def finish_if_done(engine: Engine, message_ids: Iterable[str]) -> list[str]:
    """Mark dispatched Messages DONE once no Delivery is QUEUED; returns those closed now."""
    closed = []
    now = utcnow()
    with session_scope(engine) as s:
        for mid in set(message_ids):
            pending = exists().where(
                col(Delivery.message_id) == mid, col(Delivery.status) == DeliveryStatus.QUEUED
            )
            res = s.execute(
                update(Message)
                .where(
                    col(Message.id) == mid, col(Message.state) == MessageState.DISPATCHED, ~pending
                )
                .values(state=MessageState.DONE, completed_at=now)
            )
            if res.rowcount:  # type: ignore[attr-defined]
                closed.append(mid)
    return closed


# --- fan-out -------------------------------------------------------------------------------


def insert_deliveries(
    engine: Engine, message: Message, page: Sequence[tuple[str, str]], cursor: str
) -> list[tuple[str, str]]:
    """Write QUEUED Deliveries for a page of (registration id, provider) and move the cursor.

    Idempotent: a redelivered fan-out skips rows that exist. Returns (delivery id, provider)
    of every still-QUEUED Delivery of the page, so it can be (re)enqueued.
    """
    now = utcnow()
    rows: list[dict[str, Any]] = [
        {
            "id": new_id(),
            "message_id": message.id,
            "registration_id": rid,
            "app_id": message.app_id,
            "provider": provider,
            "status": DeliveryStatus.QUEUED,
            "attempts": 0,
            "created_at": now,
            "updated_at": now,
        }
        for rid, provider in page
    ]
    page_ids = [rid for rid, _ in page]
    with session_scope(engine) as s:
        existing = s.execute(
            select(func.count()).where(
                col(Delivery.message_id) == message.id,
                col(Delivery.registration_id).in_(page_ids),
            )
        ).scalar_one()
        dialect = s.get_bind().dialect.name
        insert = pg_insert if dialect == "postgresql" else sqlite_insert
        stmt = insert(Delivery).on_conflict_do_nothing(
            index_elements=["message_id", "registration_id"]
        )
        s.execute(stmt, rows)
        s.execute(
            update(Message)
            .where(col(Message.id) == message.id)
            .values(
                fanout_cursor=cursor,
                total=col(Message.total) + (len(page) - existing),
            )
        )
        queued = s.execute(
            select(col(Delivery.id), col(Delivery.provider)).where(
                col(Delivery.message_id) == message.id,
                col(Delivery.registration_id).in_(page_ids),
                col(Delivery.status) == DeliveryStatus.QUEUED,
            )
        ).all()
    return [(i, p) for i, p in queued]


def audience_page(
    engine: Engine, condition: Any, after: str | None, limit: int
) -> list[tuple[str, str]]:
    q = select(col(Registration.id), col(Registration.provider)).where(condition)
    if after:
        q = q.where(col(Registration.id) > after)
    q = q.order_by(col(Registration.id)).limit(limit)
    with Session(engine) as s:
        return [(r[0], r[1]) for r in s.execute(q).all()]


def set_message_state(
    engine: Engine,
    message_id: str,
    state: str,
    *,
    code: int | None = None,
    detail: str | None = None,
) -> None:
    now = utcnow()
    values: dict[str, Any] = {"state": state}
    if state == MessageState.DISPATCHED:
        values["dispatched_at"] = now
    if state in (MessageState.DONE, MessageState.FAILED):
        values["completed_at"] = now
    if code is not None:
        values["code"] = code
    if detail is not None:
        values["detail"] = detail
    with session_scope(engine) as s:
        s.execute(update(Message).where(col(Message.id) == message_id).values(**values))


def release(engine: Engine, ids: Sequence[str], next_attempt_at: datetime) -> int:
    """Hand claimed rows back unsent: a task held back by its lane (a pause, no tokens yet)
    made no attempt, so the attempt its claim counted is taken back."""
    if not ids:
        return 0
    with session_scope(engine) as s:
        res = s.execute(
            update(Delivery)
            .where(
                col(Delivery.id).in_(list(ids)),
                col(Delivery.status) == DeliveryStatus.QUEUED,
                col(Delivery.attempts) > 0,
            )
            .values(
                attempts=col(Delivery.attempts) - 1,
                lease_until=None,
                # Tells the recovery sweep these rows wait on purpose, and until when.
                next_attempt_at=next_attempt_at,
                updated_at=utcnow(),
            )
            .execution_options(synchronize_session=False)
        )
        return int(res.rowcount)  # type: ignore[attr-defined]
