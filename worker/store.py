"""The worker's reads and writes: claim a chunk, record outcomes, close Messages. Bulk always."""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field, fields, replace
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import (
    Connection,
    Engine,
    bindparam,
    exists,
    func,
    literal,
    or_,
    select,
    text,
    true,
    update,
)
from sqlmodel import Session, col

from schemas import jsontext
from schemas.campaigns import cancel_deliveries
from schemas.codes import DeliveryStatus, MessageState
from schemas.db import among, direct, fetch_raw, insert_rows, pg_array, session_scope
from schemas.inbox import save_to_inbox, topic_of
from schemas.tables import (
    QUEUED,
    App,
    Delivery,
    Message,
    Registration,
    RegistrationGlobalUser,
    delivery_rows,
    table,
    utcnow,
)


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
    webpush_keys: tuple[str, str] | None = None  # (p256dh, auth) of a Web Push subscription
    time_zone: str | None = None  # the registration's own, for quiet hours (worker/quiet.py)
    # The Global User IDs it had before (read only for bulk Messages, whose entries may
    # name an old one).
    former_global_user_ids: tuple[str, ...] = ()

    def global_user_ids(self) -> tuple[str, ...]:
        """Every Global User ID of the registration, the current one first."""
        current = (self.global_user_id,) if self.global_user_id is not None else ()
        return current + self.former_global_user_ids


@dataclass(frozen=True, slots=True)
class Record:
    """One Delivery's new state after an attempt."""

    id: str
    status: str
    code: int | None  # None: cancelled, no provider outcome
    provider_message: str | None
    provider_ref: str | None
    sent: bool
    # This attempt, appended to the Delivery's history. Kept as a dict, not its JSON text:
    # on PostgreSQL it goes into the batch's one document as an object, encoded once.
    attempt: dict[str, Any] = field(default_factory=dict)


# (delivery id, code, provider message, next attempt at, this attempt)
Retry = tuple[str, int, str, datetime, dict[str, Any]]


@dataclass(frozen=True, slots=True)
class ClaimedMessage:
    """What delivering reads of a Message: read as a plain row, not an ORM object (a task
    of single-device pushes reads as many Messages as Deliveries)."""

    id: str
    app_id: str
    target: dict[str, Any]
    payload: dict[str, Any]
    state: str
    total: int
    lane: str
    expires_at: datetime | None
    max_per_minute: int | None
    quiet_hours: dict[str, str] | None  # its own; else its app's (worker/quiet.py)


_MESSAGE_COLUMNS = [f.name for f in fields(ClaimedMessage)]
_APP_COLUMNS = tuple(table(App).c.keys())


@dataclass
class Claim:
    deliveries: list[ClaimedDelivery]
    # When rows of the chunk are still leased by another task (one that may have died),
    # when that lease ends — so the caller can look again then.
    leased_until: datetime | None
    messages: dict[str, ClaimedMessage]  # of the claimed Deliveries
    apps: dict[str, App]  # of the claimed Deliveries (an app deleted meanwhile is absent)


_REGISTRATION_COLUMNS = (
    "id",
    "token",
    "active",
    "deactivated_code",
    "platform",
    "username",
    "global_user_id",
    "locale",
    "preferred_languages",
    "webpush_p256dh",
    "webpush_auth",
    "time_zone",
)
# A status test that the planner cannot answer from a partial index (`WHERE status =
# 'QUEUED'`, `WHERE state IN (...open...)`): for a statement that names its rows by id.
# Such an index holds every QUEUED row and, until a vacuum, every row that was QUEUED; with
# statistics saying few rows are QUEUED the planner scanned it whole for each batch instead
# of looking up the ids: 4 of a record's 4.3 ms with 2,600 entries, growing with the
# backlog. As a subquery the value is known only when the statement runs.
QUEUED_BY_ID = "(SELECT 'QUEUED')"
DISPATCHED_BY_ID = "(SELECT 'dispatched')"


def _by_id(value: str) -> Any:
    """QUEUED_BY_ID's counterpart for statements built with SQLAlchemy."""
    return select(literal(value)).scalar_subquery()


# The claim, with the registrations, Messages and apps it needs, in one statement on
# PostgreSQL. A Message's (an app's) columns come on its first row only: a broadcast's
# payload is sent and parsed once, not once per Delivery. psycopg parses JSON itself.
_PG_CLAIM = text(
    f"""
    WITH taken AS (
        UPDATE delivery SET lease_until = :until, leased_by = :holder, attempts = attempts + 1
        WHERE id = ANY(CAST(:ids AS text[])) AND status = {QUEUED_BY_ID}
          AND (lease_until IS NULL OR lease_until < :now)
        RETURNING id, message_id, app_id, provider, attempts, registration_id),
    ranked AS (
        SELECT t.*, row_number() OVER (PARTITION BY t.message_id) AS nth_of_message,
               row_number() OVER (PARTITION BY t.app_id) AS nth_of_app
        FROM taken t)
    SELECT t.id, t.message_id, t.app_id, t.provider, t.attempts, t.registration_id,
           {", ".join(f"r.{c}" for c in _REGISTRATION_COLUMNS)},
           {", ".join(f"m.{c}" for c in _MESSAGE_COLUMNS)},
           {", ".join(f"a.{c}" for c in _APP_COLUMNS)}
    FROM ranked t LEFT JOIN registration r ON r.id = t.registration_id
    LEFT JOIN message m ON t.nth_of_message = 1 AND m.id = t.message_id
    LEFT JOIN app a ON t.nth_of_app = 1 AND a.id = t.app_id
    """
)
_CLAIMED_WIDTH = 6 + len(_REGISTRATION_COLUMNS)


def claim(engine: Engine, ids: Sequence[str], lease_s: int, holder: str) -> Claim:
    """Take the QUEUED, unleased Deliveries among `ids` for this task (leased to `holder`,
    this process), with the Messages and apps they need.

    A row already final is simply skipped: a redelivered chunk never re-sends it.

    The claim changes only unindexed columns (lease, attempts), so PostgreSQL can update
    the row in place (HOT); the sweep reads a lease as a sign of work. On PostgreSQL it is
    one statement, committing alone, that also returns the registrations, Messages and
    apps: one round trip.
    """
    now = utcnow()
    until = now + timedelta(seconds=lease_s)
    d = table(Delivery).c
    with direct(engine).connect() if _on_pg(engine) else engine.begin() as conn:
        dialect = conn.dialect.name
        messages: dict[str, ClaimedMessage] = {}
        apps: dict[str, App] = {}
        rows: Sequence[Sequence[Any]]
        if dialect == "postgresql":
            params = {"ids": pg_array(ids), "now": now, "until": until, "holder": holder}
            rows = _split_claim(fetch_raw(conn, _PG_CLAIM, params), messages, apps)
        else:
            rows = _claim_rows(conn, ids, now, until, holder)
        taken = [row[0] for row in rows]
        leased_until = None
        if len(taken) < len(ids):
            leased_until = conn.execute(
                select(func.max(d.lease_until)).where(
                    among(d.id, ids, dialect),
                    d.status == _by_id(DeliveryStatus.QUEUED),
                    d.lease_until >= now,
                    ~among(d.id, taken, dialect) if taken else true(),
                )
            ).scalar()
        if rows and dialect != "postgresql":
            message_ids, app_ids = {row[1] for row in rows}, {row[2] for row in rows}
            messages = _claimed_messages(conn, message_ids)
            apps = _claimed_apps(conn, app_ids)
        claimed = _with_history(conn, [_claimed(row) for row in rows], messages)
    return Claim(claimed, leased_until, messages, apps)


def _on_pg(engine: Engine) -> bool:
    return engine.dialect.name == "postgresql"


def _split_claim(
    rows: Sequence[Sequence[Any]], messages: dict[str, ClaimedMessage], apps: dict[str, App]
) -> list[Sequence[Any]]:
    """_PG_CLAIM's rows: each Delivery with its registration, and on the first row of each
    Message (and of each app) that Message's (app's) columns, else NULLs."""
    claimed = _CLAIMED_WIDTH
    message_end = claimed + len(_MESSAGE_COLUMNS)
    for row in rows:
        if row[claimed] is not None:
            messages[row[claimed]] = ClaimedMessage(*row[claimed:message_end])
        if row[message_end] is not None:
            apps[row[message_end]] = _app_of(tuple(row[message_end:]))
    return [row[:claimed] for row in rows]


def _claimed_messages(conn: Connection, ids: set[str]) -> dict[str, ClaimedMessage]:
    m = table(Message).c
    columns = (m[name] for name in _MESSAGE_COLUMNS)
    found = conn.execute(select(*columns).where(among(m.id, ids, conn.dialect.name)))
    return {row[0]: ClaimedMessage(*row) for row in found}


def _claimed_apps(conn: Connection, ids: set[str]) -> dict[str, App]:
    """The apps by id, read as plain rows (the portable path; see _app_of)."""
    a = table(App).c
    rows = conn.execute(select(table(App)).where(among(a.id, ids, conn.dialect.name)))
    return {row[0]: _app_of(tuple(row)) for row in rows}


def _app_of(values: tuple[Any, ...]) -> App:
    """An App from its row's values. Building one costs more than the rest of a claim, so
    one built from exactly the same values is reused (an App here is never mutated)."""
    known = _apps_seen.get(values[0])
    if known is None or known[0] != values:
        app = App(**dict(zip(_APP_COLUMNS, values, strict=True)))
        known = _apps_seen[values[0]] = (values, app)
    return known[1]


_apps_seen: dict[str, tuple[tuple[Any, ...], App]] = {}


def _with_history(
    conn: Connection, claimed: list[ClaimedDelivery], messages: dict[str, ClaimedMessage]
) -> list[ClaimedDelivery]:
    """The claimed Deliveries of bulk Messages with their registrations' former Global
    User IDs: a bulk entry naming an old one must still pick that entry's notification."""
    bulk = {mid for mid, m in messages.items() if (m.target or {}).get("type") == "bulk"}
    wanted = {c.registration_id for c in claimed if c.message_id in bulk and c.registration_id}
    if not wanted:
        return claimed
    g = table(RegistrationGlobalUser).c
    history: dict[str, list[str]] = {}
    found = conn.execute(
        select(g.registration_id, g.global_user_id)
        .where(among(g.registration_id, wanted, conn.dialect.name))
        .order_by(g.created_at)
    )
    for rid, guid in found:
        history.setdefault(rid, []).append(guid)
    return [
        replace(
            c,
            former_global_user_ids=tuple(
                guid for guid in history.get(c.registration_id, ()) if guid != c.global_user_id
            ),
        )
        if c.registration_id in history
        else c
        for c in claimed
    ]


def _claim_rows(
    conn: Connection, ids: Sequence[str], now: datetime, until: datetime, holder: str
) -> list[tuple[Any, ...]]:
    """The portable claim (SQLite): update, then read the registrations; rows shaped as
    _PG_CLAIM's."""
    d, r = table(Delivery).c, table(Registration).c
    dialect = conn.dialect.name
    taken = conn.execute(
        update(table(Delivery))
        .where(
            among(d.id, ids, dialect),
            d.status == _by_id(DeliveryStatus.QUEUED),
            or_(d.lease_until.is_(None), d.lease_until < now),
        )
        .values(lease_until=until, leased_by=holder, attempts=d.attempts + 1)
        .returning(d.id, d.message_id, d.app_id, d.provider, d.attempts, d.registration_id)
    ).all()
    if not taken:
        return []
    columns = [getattr(r, c) for c in _REGISTRATION_COLUMNS]
    regs = {
        row[0]: tuple(row)
        for row in conn.execute(select(*columns).where(among(r.id, {t[5] for t in taken}, dialect)))
    }
    missing = (None,) * len(_REGISTRATION_COLUMNS)
    return [tuple(t) + regs.get(t[5], missing) for t in taken]


def _claimed(row: Any) -> ClaimedDelivery:
    (did, message_id, app_id, provider, attempts, _, rid, token, active, code, *rest) = row
    if rid is None:  # the registration was deleted after fan-out
        return ClaimedDelivery(did, message_id, app_id, provider, attempts, "", "", False, None)
    platform, username, global_user_id, locale, preferred_languages, p256dh, auth, zone = rest
    return ClaimedDelivery(
        id=did,
        message_id=message_id,
        app_id=app_id,
        provider=provider,
        attempts=attempts,
        token=token or "",
        registration_id=rid,
        registration_active=bool(active),
        deactivated_code=code,
        platform=platform,
        username=username,
        global_user_id=global_user_id,
        locale=locale,
        preferred_languages=preferred_languages,
        webpush_keys=(p256dh, auth) if p256dh and auth else None,
        time_zone=zone,
    )


def load_messages(engine: Engine, ids: Iterable[str]) -> dict[str, Message]:
    with Session(engine) as s:
        rows = s.execute(select(Message).where(col(Message.id).in_(list(ids)))).scalars()
        return {m.id: m for m in rows}


# One statement for a whole batch of outcomes on PostgreSQL: the batch goes in as one JSON
# document (written by orjson; psycopg adapts a Python list element by element in Python),
# one UPDATE ... FROM jsonb_to_recordset, a constant text psycopg prepares once. The ids
# come again as an array: the planner counts a function's rows as 100, and would rather
# scan a small table than look up 100 ids; it knows an array's length.
_FINALS_SQL = f"""
    UPDATE delivery AS d
    SET status = v.status, code = v.code, provider_message = v.msg, provider_ref = v.ref,
        sent_at = CASE WHEN v.sent THEN CAST(:now AS timestamptz) END,
        lease_until = NULL, updated_at = CAST(:now AS timestamptz),
        history = COALESCE(d.history, '[]'::jsonb) || jsonb_build_array(v.att)
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
         AS v(id text, status text, code int, msg text, ref text, sent bool, att jsonb)
    WHERE d.id = v.id AND d.id = ANY(CAST(:dids AS text[])) AND d.status = {QUEUED_BY_ID}
    """
_PG_FINALS = text(_FINALS_SQL)
_PG_RETRIES = text(
    f"""
    UPDATE delivery AS d
    SET code = v.code, provider_message = v.msg, next_attempt_at = v.next,
        lease_until = NULL, updated_at = CAST(:now AS timestamptz),
        history = COALESCE(d.history, '[]'::jsonb) || jsonb_build_array(v.att)
    FROM jsonb_to_recordset(CAST(:rows AS jsonb))
         AS v(id text, code int, msg text, next timestamptz, att jsonb)
    WHERE d.id = v.id AND d.id = ANY(CAST(:dids AS text[])) AND d.status = {QUEUED_BY_ID}
    """
)


# SQLite: append this attempt's JSON to the history array.
_APPEND = func.json_insert(
    func.coalesce(table(Delivery).c.history, "[]"), "$[#]", func.json(bindparam("b_att"))
)


def record(
    engine: Engine,
    finals: Sequence[Record],
    retries: Sequence[Retry],
    deactivate: Sequence[tuple[str, int]],
    message_ids: Iterable[str] = (),
    whole: dict[str, int] | None = None,
) -> list[str]:
    """Write outcomes in one transaction, and close the Messages among `message_ids` that
    have nothing QUEUED left; returns those closed.

    `whole`: Messages all of whose Deliveries this task held and has now settled, with
    how many that is; each is closed when its total says so, with no lock and no look at
    its Deliveries (the common case: a single-device push)."""
    now = utcnow()
    closing = set(message_ids)
    if _on_pg(engine) and finals and not (retries or deactivate or closing):
        with direct(engine).connect() as conn:  # one statement, committing alone
            if not whole:
                fetch_raw(conn, _PG_FINALS, {"now": now, **_finals_params(finals)})
                return []
            found = fetch_raw(
                conn,
                _PG_FINALS_CLOSING_WHOLE,
                {"now": now, **_finals_params(finals), **_whole_params(whole)},
            )
            return [row[0] for row in found]
    with engine.begin() as conn:
        if conn.dialect.name == "postgresql":
            _record_pg(conn, finals, retries, now)
            closed = _close_whole(conn, whole or {}, now)
        else:
            _record_rows(conn, finals, retries, now)
            closing |= set(whole or ())
            closed = []
        if deactivate:
            r = table(Registration).c
            conn.execute(
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
        return closed + _close_done(conn, closing, now)


# A Message whose every Delivery was in one task is done when that task settled them all:
# its total (fixed once it is dispatched) tells, so no lock and no look at the Deliveries.
_CLOSE_WHOLE_SQL = f"""
    UPDATE message AS m SET state = 'done', completed_at = CAST(:now AS timestamptz)
    FROM unnest(CAST(:ids AS text[]), CAST(:totals AS int[])) AS v(id, total)
    WHERE m.id = v.id AND m.state = {DISPATCHED_BY_ID} AND m.total = v.total
    RETURNING m.id
    """
_PG_CLOSE_WHOLE = text(_CLOSE_WHOLE_SQL)
# The common case, a task of single-device pushes that all settled: one statement.
_PG_FINALS_CLOSING_WHOLE = text(f"WITH finals AS ({_FINALS_SQL}) {_CLOSE_WHOLE_SQL}")


def _close_whole(conn: Connection, whole: dict[str, int], now: datetime) -> list[str]:
    if not whole:
        return []
    found = conn.execute(_PG_CLOSE_WHOLE, {"now": now, **_whole_params(whole)})
    return list(found.scalars())


def _whole_params(whole: dict[str, int]) -> dict[str, str]:
    return {"ids": pg_array(whole), "totals": pg_array(whole.values())}


def _finals_params(finals: Sequence[Record]) -> dict[str, Any]:
    rows = [
        {
            "id": f.id,
            "status": f.status,
            "code": f.code,
            "msg": f.provider_message,
            "ref": f.provider_ref,
            "sent": f.sent,
            "att": f.attempt,
        }
        for f in finals
    ]
    return {"rows": jsontext.dumps(rows), "dids": pg_array(f.id for f in finals)}


def _record_pg(
    conn: Connection,
    finals: Sequence[Record],
    retries: Sequence[Retry],
    now: datetime,
) -> None:
    if finals:
        conn.execute(_PG_FINALS, {"now": now, **_finals_params(finals)})
    if retries:
        rows = [
            {"id": i, "code": c, "msg": m, "next": t.isoformat(), "att": a}
            for i, c, m, t, a in retries
        ]
        dids = pg_array(r[0] for r in retries)
        conn.execute(_PG_RETRIES, {"now": now, "rows": jsontext.dumps(rows), "dids": dids})


def _record_rows(
    conn: Connection,
    finals: Sequence[Record],
    retries: Sequence[Retry],
    now: datetime,
) -> None:
    """The portable form (SQLite): one executemany per kind of outcome."""
    d = table(Delivery).c
    if finals:
        conn.execute(
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
                history=_APPEND,
            ),
            [
                {
                    "b_id": f.id,
                    "b_status": f.status,
                    "b_code": f.code,
                    "b_msg": f.provider_message,
                    "b_ref": f.provider_ref,
                    "b_sent": now if f.sent else None,
                    "b_att": json.dumps(f.attempt),
                }
                for f in finals
            ],
        )
    if retries:
        conn.execute(
            update(table(Delivery))
            .where(d.id == bindparam("b_id"), d.status == DeliveryStatus.QUEUED)
            .values(
                code=bindparam("b_code"),
                provider_message=bindparam("b_msg"),
                next_attempt_at=bindparam("b_next"),
                lease_until=None,
                updated_at=now,
                history=_APPEND,
            ),
            [
                {"b_id": i, "b_code": c, "b_msg": m, "b_next": t, "b_att": json.dumps(a)}
                for i, c, m, t, a in retries
            ],
        )


def finish_if_done(engine: Engine, message_ids: Iterable[str]) -> list[str]:
    """Mark dispatched Messages DONE once no Delivery is QUEUED; returns those closed now."""
    with engine.begin() as conn:
        return _close_done(conn, message_ids, utcnow())


def _close_done(conn: Connection, message_ids: Iterable[str], now: datetime) -> list[str]:
    """One statement for all of them: a batch of single-device pushes touches hundreds."""
    ids = set(message_ids)
    if not ids:
        return []
    m, d = table(Message).c, table(Delivery).c
    dialect = conn.dialect.name
    if dialect == "postgresql":
        # Two batches finishing a Message's last Deliveries at once would each still see
        # the other's rows QUEUED and neither close it: lock the Messages first, so the
        # second looks only after the first committed (its next statement sees that).
        # Whatever their state: a fan-out marking its Message DISPATCHED after its last
        # chunk was sent, and closing it if nothing is QUEUED, must wait for a chunk
        # recording meanwhile, or each would miss the other's write.
        conn.execute(select(m.id).where(among(m.id, ids, dialect)).order_by(m.id).with_for_update())
    pending = exists().where(d.message_id == m.id, d.status == QUEUED)
    closed = conn.execute(
        update(table(Message))
        .where(among(m.id, ids, dialect), m.state == _by_id(MessageState.DISPATCHED), ~pending)
        .values(state=MessageState.DONE, completed_at=now)
        .returning(m.id)
    ).scalars()
    return list(closed)


# --- fan-out -------------------------------------------------------------------------------


_DELIVERY_KEY = ("message_id", "registration_id")


def insert_deliveries(
    engine: Engine, message: Message, page: Sequence[tuple[str, str]], cursor: str
) -> list[tuple[str, str]] | None:
    """Write QUEUED Deliveries for a page of (registration id, provider) and move the cursor.

    Idempotent: a redelivered fan-out skips rows that exist. Returns (delivery id, provider)
    of every still-QUEUED Delivery of the page, so it can be (re)enqueued; None when the
    Message was cancelled (its cursor row says so), having cancelled the page.
    """
    rows = delivery_rows(message.id, message.app_id, page, utcnow())
    page_ids = [rid for rid, _ in page]
    with session_scope(engine) as s:
        dialect = s.get_bind().dialect.name
        of_page = (
            col(Delivery.message_id) == message.id,
            among(col(Delivery.registration_id), page_ids, dialect),
        )
        existing = s.execute(select(func.count()).where(*of_page)).scalar_one()
        # One statement per page, skipping rows a redelivered fan-out already wrote.
        insert_rows(s.connection(), table(Delivery), rows, skip_existing=_DELIVERY_KEY)
        topic = topic_of(message.payload)
        if topic is not None:
            save_to_inbox(s.connection(), message.id, message.app_id, topic, page_ids, utcnow())
        state = s.execute(
            update(Message)
            .where(col(Message.id) == message.id)
            .values(
                fanout_cursor=cursor,
                total=col(Message.total) + (len(page) - existing),
            )
            .returning(col(Message.state))
        ).scalar()
        if state == MessageState.CANCELLED:
            s.execute(cancel_deliveries(message.id, utcnow()))
            return None
        if not existing:  # a first pass over the page: what it wrote is what is QUEUED
            return [(row["id"], row["provider"]) for row in rows]
        queued = s.execute(
            select(col(Delivery.id), col(Delivery.provider)).where(
                *of_page, col(Delivery.status) == _by_id(DeliveryStatus.QUEUED)
            )
        ).all()
    return [(i, p) for i, p in queued]


def count_audience(engine: Engine, condition: Any) -> int:
    with Session(engine) as s:
        return int(s.execute(select(func.count()).where(condition)).scalar_one())


def set_rate(engine: Engine, message_id: str, per_minute: int) -> None:
    with session_scope(engine) as s:
        s.execute(
            update(Message).where(col(Message.id) == message_id).values(max_per_minute=per_minute)
        )


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
        # Never over a cancellation that came in meanwhile.
        s.execute(
            update(Message)
            .where(col(Message.id) == message_id, col(Message.state) != MessageState.CANCELLED)
            .values(**values)
        )


def release(
    engine: Engine, ids: Sequence[str], next_attempt_at: datetime, note: str | None = None
) -> int:
    """Hand claimed rows back unsent: a task held back by its lane (a pause, no tokens yet)
    or by quiet hours made no attempt, so the attempt its claim counted is taken back.
    `note` (why it waits) is kept as the Delivery's provider_message."""
    extra = {"provider_message": note} if note is not None else {}
    if not ids:
        return 0
    with session_scope(engine) as s:
        res = s.execute(
            update(Delivery)
            .where(
                col(Delivery.id).in_(list(ids)),
                col(Delivery.status) == _by_id(DeliveryStatus.QUEUED),
                col(Delivery.attempts) > 0,
            )
            .values(
                attempts=col(Delivery.attempts) - 1,
                lease_until=None,
                # Tells the recovery sweep these rows wait on purpose, and until when.
                next_attempt_at=next_attempt_at,
                updated_at=utcnow(),
                **extra,
            )
            .execution_options(synchronize_session=False)
        )
        return int(res.rowcount)  # type: ignore[attr-defined]
