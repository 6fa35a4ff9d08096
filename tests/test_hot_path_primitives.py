"""The small pieces the single-device path leans on, against real PostgreSQL and Redis:
batched random ids, statements run on psycopg's own cursor, progress announced only where
someone listens, Message's partial unique keys, and statements that name their rows by id
finding them by id."""

from __future__ import annotations

import asyncio
import json
import multiprocessing
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import redis
from sqlalchemy import Engine, text
from sqlalchemy.exc import IntegrityError, OperationalError, ProgrammingError
from sqlmodel import Session, col, select

from schemas import jsontext
from schemas.codes import MessageState
from schemas.db import among, direct, engine_for, fetch_raw, insert_together, pg_array, upgrade
from schemas.ids import uuid4_hex, uuid4_str, uuid7_str
from schemas.queueing import progress_channel
from schemas.settings import Settings
from schemas.tables import App, Message, new_id, table
from tests.conftest import drop_postgres, fresh_postgres, fresh_redis
from worker.events import announce_progress
from worker.store import _PG_CLAIM, _PG_FINALS_CLOSING_WHOLE, _PG_RETRIES


@pytest.fixture(scope="module")
def pg() -> Iterator[Engine]:
    url = fresh_postgres(f"pushline_primitives_{os.getpid()}")
    upgrade(url)
    engine = engine_for(url)
    yield engine
    engine.dispose()


def _child_ids(queue: multiprocessing.Queue[list[str]]) -> None:
    queue.put([uuid4_str() for _ in range(300)])


def test_ids_are_random_version_4_uuids_and_a_forked_child_never_repeats_its_parents() -> None:
    uuid4_str()  # the parent holds a partly used draw when it forks
    queue: multiprocessing.Queue[list[str]] = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=_child_ids, args=(queue,))
    child.start()
    theirs = queue.get(timeout=30)
    child.join(timeout=30)
    ours = [uuid4_str() for _ in range(300)]
    assert not set(ours) & set(theirs)
    assert len(set(ours)) == len(ours)  # 300 ids span two 4 KiB draws
    for value in ours + theirs:
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert parsed.version == 4 and parsed.variant == uuid.RFC_4122
    # The variant's two fixed bits leave two random ones: all four digits turn up.
    assert {value[19] for value in ours} == set("89ab")
    hexed = [uuid4_hex() for _ in range(300)]
    assert {uuid.UUID(hex=h).version for h in hexed} == {4}
    assert {h[16] for h in hexed} == set("89ab") and len(set(hexed)) == 300


def test_row_ids_are_version_7_uuids_that_carry_their_millisecond_and_sort_by_creation() -> None:
    before = time.time_ns() // 1_000_000
    first = [new_id() for _ in range(300)]  # 300 ids span two 4 KiB draws
    after = time.time_ns() // 1_000_000
    time.sleep(0.003)
    later = uuid7_str()
    assert len(set(first)) == 300
    for value in [*first, later]:
        parsed = uuid.UUID(value)
        assert str(parsed) == value
        assert parsed.version == 7 and parsed.variant == uuid.RFC_4122
    assert all(before <= uuid.UUID(v).int >> 80 <= after for v in first)
    assert all(v < later for v in first)  # as text too: that is how the indexes order them
    # The variant's two fixed bits leave two random ones: all four digits turn up.
    assert {value[19] for value in first} == set("89ab")


def test_a_raw_statement_returns_plain_rows_and_nothing_for_a_statement_without_rows(
    pg: Engine,
) -> None:
    query = text("SELECT CAST(:n AS int) + 1, '5%' AS literal, CAST(:ids AS text[])")
    with direct(pg).connect() as conn:
        assert fetch_raw(conn, query, {"n": 41, "ids": ["a", "b"]}) == [(42, "5%", ["a", "b"])]
        assert fetch_raw(conn, text("SET application_name = 'primitives'"), {}) == []


def test_a_raw_statement_fails_as_sqlalchemy_would_and_a_lost_connection_is_replaced(
    pg: Engine,
) -> None:
    with direct(pg).connect() as conn, pytest.raises(ProgrammingError) as wrong:
        fetch_raw(conn, text("SELECT no_such_column, :token"), {"token": "device-token-secret"})
    assert "device-token-secret" not in str(wrong.value)  # parameters stay hidden
    with direct(pg).connect() as conn:
        pid = fetch_raw(conn, text("SELECT pg_backend_pid()"), {})[0][0]
        with direct(pg).connect() as other:
            fetch_raw(other, text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
        with pytest.raises(OperationalError) as lost:
            fetch_raw(conn, text("SELECT 1"), {})
        assert lost.value.connection_invalidated
    with direct(pg).connect() as conn:  # the pool hands out a working connection again
        assert fetch_raw(conn, text("SELECT 1"), {}) == [(1,)]


def _next(sub: redis.client.PubSub, kinds: set[str], timeout_s: float) -> dict | None:  # type: ignore[type-arg]
    """The next message of one of `kinds` within `timeout_s`, or None."""
    deadline = time.monotonic() + timeout_s
    while (left := deadline - time.monotonic()) > 0:
        got = sub.get_message(timeout=left)
        if got is not None and got["type"] in kinds:
            return got
    return None


def test_progress_is_published_on_a_watched_messages_channel_and_on_no_other() -> None:
    prefix = f"t{os.getpid()}-progress-{uuid.uuid4().hex[:6]}:"
    settings = Settings(redis_url=fresh_redis(12), redis_key_prefix=prefix)
    client = redis.Redis.from_url(settings.redis_url)
    watched = client.pubsub()
    watched.subscribe(progress_channel(settings, "watched"))
    everything = client.pubsub()  # a pattern subscriber is no waiter: NUMSUB skips it
    everything.psubscribe(progress_channel(settings, "*"))
    assert _next(watched, {"subscribe"}, 5.0) is not None
    assert _next(everything, {"psubscribe"}, 5.0) is not None
    announce_progress(settings, ["watched", "unwatched", "watched"])
    got = _next(watched, {"message"}, 5.0)
    assert got is not None and got["channel"] == progress_channel(settings, "watched").encode()
    seen = []
    while (message := _next(everything, {"pmessage"}, 0.5)) is not None:
        seen.append(message["channel"])
    assert seen == [progress_channel(settings, "watched").encode()]
    watched.close()
    everything.close()


def _add(engine: Engine, app_id: str, **values: object) -> None:
    with Session(engine) as s:
        s.add(Message(app_id=app_id, target={}, payload={}, **values))
        s.commit()


def test_messages_without_keys_share_nothing_while_a_key_or_a_schedule_run_stays_unique(
    pg: Engine,
) -> None:
    with Session(pg) as s:
        app = App(name=f"keys-{uuid.uuid4().hex[:6]}")
        s.add(app)
        s.commit()
        app_id = app.id
    for _ in range(3):  # no key, no schedule: any number of them
        _add(pg, app_id)
    _add(pg, app_id, idempotency_key="order-7")
    with pytest.raises(IntegrityError):
        _add(pg, app_id, idempotency_key="order-7")
    run = datetime(2026, 12, 6, 12, tzinfo=UTC)
    _add(pg, app_id, schedule_id="weekly", run_at=run)
    _add(pg, app_id, schedule_id="weekly", run_at=run + timedelta(days=7))
    with pytest.raises(IntegrityError):
        _add(pg, app_id, schedule_id="weekly", run_at=run)
    with Session(pg) as s:
        kept = s.exec(select(Message).where(col(Message.app_id) == app_id)).all()
    assert len(kept) == 6


def _indexes_in(plan: object) -> set[str]:
    if isinstance(plan, dict):
        found = {plan["Index Name"]} if "Index Name" in plan else set()
        return found.union(*(_indexes_in(v) for v in plan.values()))
    if isinstance(plan, list):
        return set().union(*(_indexes_in(v) for v in plan))
    return set()


def test_claim_and_record_look_up_their_deliveries_by_id_when_statistics_say_few_are_queued(
    pg: Engine,
) -> None:
    """Analyzed while nothing was QUEUED, then 20,000 QUEUED rows arrive (autovacuum has not
    run): the partial QUEUED indexes look cheapest to the planner, and scanning them would
    read every QUEUED row for each batch of 20."""
    with Session(pg) as s:
        app = App(name=f"plans-{uuid.uuid4().hex[:6]}")
        s.add(app)
        s.commit()
        app_id = app.id
    with pg.begin() as conn:
        conn.execute(text("ANALYZE delivery; ANALYZE message"))
    with pg.begin() as conn:
        for sql in (
            "INSERT INTO registration (id, app_id, provider, platform, token, active,"
            " created_at, updated_at)"
            " SELECT 'r' || i, :app, 'apns', 'ios', 't' || i, true, now(), now()"
            " FROM generate_series(1, 20000) i",
            "INSERT INTO message (id, app_id, target, payload, state, total, created_at)"
            " SELECT 'm' || i, :app, '{}', '{}', 'dispatched', 1, now()"
            " FROM generate_series(1, 20000) i",
            "INSERT INTO delivery (id, message_id, registration_id, app_id, provider, status,"
            " attempts, created_at, updated_at)"
            " SELECT 'd' || i, 'm' || i, 'r' || i, :app, 'apns', 'QUEUED', 0, now(), now()"
            " FROM generate_series(1, 20000) i",
        ):
            conn.execute(text(sql), {"app": app_id})
    ids = [f"d{i}" for i in range(1, 21)]
    now = datetime.now(UTC)
    rows = [{"id": i, "status": "SENT", "code": 0, "att": "{}"} for i in ids]
    statements = {
        "claim": (_PG_CLAIM, {"ids": pg_array(ids), "now": now, "until": now, "holder": "vm:1"}),
        "record": (
            _PG_FINALS_CLOSING_WHOLE,
            {
                "now": now,
                "rows": json.dumps(rows),
                "dids": pg_array(ids),
                "ids": pg_array(f"m{i}" for i in range(1, 21)),
                "totals": pg_array([1] * 20),
            },
        ),
        "retry": (_PG_RETRIES, {"now": now, "rows": json.dumps(rows), "dids": pg_array(ids)}),
    }
    for name, (statement, params) in statements.items():
        with direct(pg).connect() as conn:
            explained = text(f"EXPLAIN (FORMAT JSON) {statement.text}")
            used = _indexes_in(conn.execute(explained, params).scalar())
        assert "delivery_pkey" in used, (name, used)
        assert not used & {
            "ix_delivery_queued_updated",
            "ix_delivery_queued_message",
            "ix_message_open",
        }, (name, used)


def test_array_literals_read_back_as_the_values_given_whatever_they_hold(pg: Engine) -> None:
    cases: list[list[object]] = [
        [uuid4_str(), uuid4_str()],
        ["NULL", "null", "x"],  # unquoted, PostgreSQL would read these as null elements
        ["", "a b", 'q"\\z', "{}", "x,y", "ünï"],
        [],
    ]
    with direct(pg).connect() as conn:
        for values in cases:
            back = fetch_raw(conn, text("SELECT CAST(:v AS text[])"), {"v": pg_array(values)})
            assert back == [([str(v) for v in values],)]
        totals = fetch_raw(conn, text("SELECT CAST(:v AS int[])"), {"v": pg_array([1, 20, -3])})
        assert totals == [([1, 20, -3],)]


def test_an_id_list_reaches_postgresql_as_one_array_value_not_a_cast_per_row(pg: Engine) -> None:
    """A 500-id list cast from text in a row filter was parsed again for every row: one
    fan-out check over 20,000 Deliveries took 7 s."""
    ids = [uuid4_str() for _ in range(500)]
    m = Message.__table__.c  # type: ignore[attr-defined]
    query = select(m.id).where(among(m.id, ids, "postgresql") | (m.name == "x"))
    with pg.connect() as conn:
        compiled = query.compile(dialect=conn.dialect)
        raw = conn.connection.dbapi_connection
        assert raw is not None
        plan = raw.execute(f"EXPLAIN (VERBOSE, FORMAT JSON) {compiled}", compiled.params)
        found = json.dumps(plan.fetchone()[0])  # type: ignore[index]
    assert f"'{{{ids[0]}," in found  # the whole list, as one constant array
    assert "::character varying)::character varying[]" not in found


def test_json_text_reads_back_as_given_where_orjson_refuses_a_value_too() -> None:
    """orjson writes the hot paths' JSON; a value it refuses (an integer past 64 bits, a
    key that is not a string) is written by the standard library, not refused."""
    at = datetime(2026, 12, 6, 23, 59, 1, 250, tzinfo=UTC)
    plain = {"state": MessageState.DISPATCHED, "at": at, "text": 'ünï "q" \n', "n": 2**63 - 1}
    assert json.loads(jsontext.dumps(plain)) == {
        **plain,
        "state": "dispatched",
        "at": at.isoformat(),
    }
    for odd in ({"n": 2**70, "at": at}, {1: "one", "at": at}):
        back = json.loads(jsontext.dumps(odd))
        assert back == {str(k): v for k, v in odd.items()} | {"at": at.isoformat()}


def test_rows_written_together_read_back_with_big_numbers_and_any_text(pg: Engine) -> None:
    with Session(pg) as s:
        app = App(name=f"rows-{uuid4_hex()}")
        s.add(app)
        s.commit()
        app_id = app.id
    data = {"big": 2**70, "text": 'ünï "q" \\ \u2028', "nested": [1.5, None, True]}
    row = {
        "id": uuid4_str(),
        "app_id": app_id,
        "target": {"type": "device", "registration_id": uuid4_str()},
        "payload": {"title": "t", "data": data},
        "state": MessageState.DISPATCHED,
        "total": 1,
        "lane": "priority",
        "created_at": datetime(2026, 12, 6, 23, 59, 1, 250, tzinfo=UTC),
    }
    with direct(pg).connect() as conn:
        insert_together(conn, [(table(Message), [row], None)])
    with Session(pg) as s:
        back = s.get(Message, row["id"])
    assert back is not None
    assert back.payload == row["payload"]
    assert back.target == row["target"]
    assert back.state == "dispatched"
    assert back.created_at == row["created_at"]


def test_a_waiter_fails_after_its_timeout_and_settled_waiters_are_forgotten() -> None:
    """The API's wait for the dispatcher: one timer for all waiters of a loop."""
    from concurrent.futures import Future

    from producer.dispatch import _wakers, on_loop

    async def scenario() -> tuple[str, str, bool, int]:
        answered: Future[str] = Future()
        never: Future[str] = Future()
        first, stuck = on_loop(answered, 0.2), on_loop(never, 0.2)
        answered.set_result("dispatched")
        state = await first
        try:
            await stuck
            outcome = "settled"
        except TimeoutError:
            outcome = "timed out"
        waker = _wakers[asyncio.get_running_loop()]
        return state, outcome, waker._sweep is None, len(waker._waiting)

    state, outcome, idle, left = asyncio.run(scenario())
    assert (state, outcome) == ("dispatched", "timed out")
    assert idle and left == 0  # nothing is kept, and no timer runs, once all are settled


def test_a_delivery_is_not_checked_against_its_message_per_row_until_a_downgrade() -> None:
    """0017: the per-row foreign key check was about 40 % of a push's insert on PostgreSQL;
    Pushline writes a Delivery only with or for its Message (the migration says how)."""
    from alembic import command

    from schemas.db import alembic_config

    url = fresh_postgres(f"pushline_fk_{os.getpid()}")
    upgrade(url)
    engine = engine_for(url)
    orphan = text(
        "INSERT INTO delivery (id, message_id, registration_id, app_id, provider, status,"
        " attempts, created_at, updated_at) VALUES (:id, 'no-such-message', 'r', 'a', 'apns',"
        " 'SENT', 1, now(), now())"
    )
    with engine.begin() as conn:
        conn.execute(orphan, {"id": uuid4_str()})
        conn.execute(text("DELETE FROM delivery"))
    command.downgrade(alembic_config(url), "0016")
    with pytest.raises(IntegrityError), engine.begin() as conn:
        conn.execute(orphan, {"id": uuid4_str()})
    upgrade(url)
    engine.dispose()
    drop_postgres(url)


def _child_name(queue: multiprocessing.Queue[str]) -> None:
    from worker.deliver import worker_name

    queue.put(worker_name())


def test_the_worker_name_in_attempts_is_each_forked_childs_own() -> None:
    from worker.deliver import worker_name

    ours = worker_name()  # asked before the fork: the child must not inherit it
    queue: multiprocessing.Queue[str] = multiprocessing.get_context("fork").Queue()
    child = multiprocessing.get_context("fork").Process(target=_child_name, args=(queue,))
    child.start()
    theirs = queue.get(timeout=30)
    child.join(timeout=30)
    assert ours.endswith(f":{os.getpid()}")
    assert theirs.endswith(f":{child.pid}") and theirs.split(":")[0] == ours.split(":")[0]


_FORKED_COUNTS = """
import multiprocessing, os, sys
from schemas.metrics import SCHEDULE_RUNS, registry

def child() -> None:
    SCHEDULE_RUNS.inc(2)

SCHEDULE_RUNS.inc(1)  # the parent's file exists before the fork
p = multiprocessing.get_context("fork").Process(target=child)
p.start(); p.join()
SCHEDULE_RUNS.inc(4)
files = sorted(f for f in os.listdir(os.environ["PROMETHEUS_MULTIPROC_DIR"]))
total = [s.value for m in registry().collect() for s in m.samples
         if s.name == "pushline_schedule_runs_total"]
print(files == sorted([f"counter_{os.getpid()}.db", f"counter_{p.pid}.db"]), total)
"""


def test_metrics_of_a_forked_child_go_to_its_own_file_and_add_up(tmp_path: Path) -> None:
    """prometheus-client's pid check is served from a pid renewed at fork
    (schemas/metrics.py): a child must still write its own file, not the parent's."""
    env = {**os.environ, "PROMETHEUS_MULTIPROC_DIR": str(tmp_path)}
    out = subprocess.run(
        [sys.executable, "-c", _FORKED_COUNTS], env=env, capture_output=True, text=True, check=True
    ).stdout
    assert out.strip() == "True [7.0]"
