"""How fast targets resolve: the fan-out's page loop over a large app, in rows per second.

    python -m bench.resolution [--rows N] [--sqlite-rows M] [--repeat K] [--postgres URL]

Builds an app of N registrations (1,000,000 by default) in a dedicated PostgreSQL database
and one of M (100,000) in SQLite, then walks the targets exactly as the fan-out does
(`worker.store.audience_page`, pages of 2,000 by registration id, nothing enqueued or
written): the whole application, a topic pair (a device on both topics counts once), a
rare topic (50 devices in a million) and an Infobip MULTIPLE filter over platform, OS
version, language and a custom attribute. Each walk runs twice: as the fan-out builds the
condition today (once) and per page (`page_audience`). Prints medians of K walks.
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import psycopg
from sqlalchemy import Engine, insert, make_url, text

from schemas.audience import audience, page_audience
from schemas.db import make_engine, normalise_url, upgrade
from schemas.tables import App, Registration, RegistrationTopic, new_id, table, utcnow
from worker import store

PAGE = 2000  # the fan-out's page size (Settings.fanout_page_size)

#: The targets walked, as the API stores them. Shares are of the generated population.
TARGETS: dict[str, dict[str, Any]] = {
    "application": {"type": "application"},
    # Half the devices on "news", half on "sport", a quarter on both: 75 % reached, once each.
    "topic": {"type": "topic", "topics": ["news", "sport"]},
    "rare topic": {"type": "topic", "topics": ["rare"]},
    # iOS, OS 17 or 18 (same attribute: either), English, tier gold: 1 device in 30.
    "multiple": {
        "type": "destinations",
        "destinations": [
            {
                "type": "MULTIPLE",
                "$and": [
                    {"platform": "iOS"},
                    {"osVersion": "17"},
                    {"osVersion": "18"},
                    {"osLanguage": "en"},
                    {"tier": "gold"},
                ],
            }
        ],
    },
}


def expected_rows(target: str, n: int) -> int:
    """How many rows the generated population puts in each target (see `_row`)."""
    if target == "application":
        return n
    if target == "topic":
        return sum(1 for i in range(1, n + 1) if i % 2 == 0 or i % 4 == 1)
    if target == "rare topic":
        return sum(1 for i in range(1, n + 1) if i % 20000 == 7)
    return sum(1 for i in range(1, n + 1) if i % 4 == 2 and i % 3 != 0 and i % 5 == 0)


def _pg_conninfo(url: str) -> str:
    return make_url(normalise_url(url)).set(drivername="postgresql").render_as_string(False)


def fresh_postgres_database(server_url: str, name: str) -> str:
    """Drop and create `name` on the server; returns its URL, migrated."""
    with psycopg.connect(f"{server_url.rstrip('/')}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    url = f"{server_url.rstrip('/')}/{name}"
    upgrade(url)
    return url


def drop_postgres_database(server_url: str, name: str) -> None:
    with psycopg.connect(f"{server_url.rstrip('/')}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def create_app(engine: Engine) -> str:
    app_id = new_id()
    with engine.begin() as conn:
        conn.execute(insert(table(App)).values(id=app_id, name=f"bench-{app_id[-12:]}"))
    return app_id


# One generated device i (1-based), spelled once for PostgreSQL (SQL) and once for SQLite
# (Python) so both stores hold the same population:
#   even i: iOS (APNs), odd i: Android; os 16/17/18/15 by i % 4; English unless i % 3 == 0;
#   tier gold when i % 5 == 0; topics: news when i is even, sport when i % 4 in (0, 1),
#   rare when i % 20000 == 7 (50 devices in a million).
_PG_INSERT = """
INSERT INTO registration (id, app_id, provider, token, platform, username, os_version,
    locale, notifications_enabled, primary_device, custom_attributes, active,
    created_at, updated_at)
SELECT md5('reg' || i)::uuid::text, %(app)s,
    CASE WHEN i %% 2 = 0 THEN 'apns' ELSE 'fcm' END,
    md5('tok' || i) || md5('en' || i),
    CASE WHEN i %% 2 = 0 THEN 'ios' ELSE 'android' END,
    'user' || (i %% 300000),
    (ARRAY['16', '17', '18', '15'])[i %% 4 + 1],
    CASE WHEN i %% 3 = 0 THEN 'de-DE' ELSE 'en_US' END,
    true, i %% 7 = 0,
    json_build_object('tier', CASE WHEN i %% 5 = 0 THEN 'gold' ELSE 'basic' END, 'n', i),
    true, now(), now()
FROM generate_series(1, %(n)s) AS i
"""
_PG_TOPICS = """
INSERT INTO registration_topic (registration_id, topic, app_id)
SELECT md5('reg' || i)::uuid::text, t.topic, %(app)s
FROM generate_series(1, %(n)s) AS i
JOIN (VALUES ('news'), ('sport'), ('rare')) AS t(topic)
  ON (t.topic = 'news' AND i %% 2 = 0) OR (t.topic = 'sport' AND i %% 4 IN (0, 1))
  OR (t.topic = 'rare' AND i %% 20000 = 7)
"""


_CONSTRAINTS = """
SELECT k.conrelid::regclass::text, k.conname, pg_get_constraintdef(k.oid), k.contype
FROM pg_constraint k
WHERE k.contype IN ('p', 'u', 'f')
  AND (k.conrelid = ANY(%(tables)s::regclass[]) OR k.confrelid = ANY(%(tables)s::regclass[]))
ORDER BY k.contype = 'f' DESC
"""
_INDEXES = """
SELECT c.relname, pg_get_indexdef(i.indexrelid)
FROM pg_index i JOIN pg_class c ON c.oid = i.indexrelid
WHERE i.indrelid = ANY(%(tables)s::regclass[])
  AND NOT EXISTS (SELECT 1 FROM pg_constraint k WHERE k.conindid = i.indexrelid)
"""
_LOADED = [
    "registration",
    "registration_topic",
    "registration_capability",
    "registration_global_user",
]


def populate_postgres(url: str, app_id: str, n: int, *, topics: bool = True) -> float:
    """Insert n registrations (and their topics) into a throwaway database; returns seconds.

    A bulk load: keys, constraints and indexes are set aside and rebuilt afterwards (one
    sorted build each instead of millions of random inserts) and the tables are UNLOGGED,
    since the data is disposable. Reads, which is what is measured, are unaffected; the
    rows keep random uuid ids, so their heap order is unrelated to id order, as in life.
    """
    started = time.perf_counter()
    with psycopg.connect(_pg_conninfo(url), autocommit=True) as conn:
        conn.execute("SET synchronous_commit = off")
        conn.execute("SET maintenance_work_mem = '256MB'")
        constraints = conn.execute(_CONSTRAINTS, {"tables": _LOADED}).fetchall()
        indexes = conn.execute(_INDEXES, {"tables": _LOADED}).fetchall()
        for table_name, name, _definition, _kind in constraints:  # foreign keys first
            conn.execute(f'ALTER TABLE {table_name} DROP CONSTRAINT "{name}"')
        for name, _definition in indexes:
            conn.execute(f'DROP INDEX "{name}"')
        for table_name in _LOADED:
            conn.execute(f"ALTER TABLE {table_name} SET UNLOGGED")
        conn.execute(_PG_INSERT, {"app": app_id, "n": n})
        if topics:
            conn.execute(_PG_TOPICS, {"app": app_id, "n": n})
        for table_name, name, definition, _kind in reversed(constraints):  # foreign keys last
            conn.execute(f'ALTER TABLE {table_name} ADD CONSTRAINT "{name}" {definition}')
        for _name, definition in indexes:
            conn.execute(definition)
        conn.execute("ANALYZE registration")
        conn.execute("ANALYZE registration_topic")
    return time.perf_counter() - started


def _row(i: int, app_id: str) -> dict[str, Any]:
    now = utcnow()
    return {
        "id": new_id(),
        "app_id": app_id,
        "provider": "apns" if i % 2 == 0 else "fcm",
        "token": f"{i:064x}",
        "platform": "ios" if i % 2 == 0 else "android",
        "username": f"user{i % 300000}",
        "os_version": ("16", "17", "18", "15")[i % 4],
        "locale": "de-DE" if i % 3 == 0 else "en_US",
        "notifications_enabled": True,
        "primary_device": i % 7 == 0,
        "custom_attributes": {"tier": "gold" if i % 5 == 0 else "basic", "n": i},
        "active": True,
        "created_at": now,
        "updated_at": now,
    }


def populate_sqlite(engine: Engine, app_id: str, n: int, batch: int = 20_000) -> float:
    started = time.perf_counter()
    for lo in range(1, n + 1, batch):
        rows = [_row(i, app_id) for i in range(lo, min(lo + batch, n + 1))]
        topics = [
            {"registration_id": r["id"], "topic": topic, "app_id": app_id}
            for i, r in zip(range(lo, lo + len(rows)), rows, strict=True)
            for topic, on in (
                ("news", i % 2 == 0),
                ("sport", i % 4 in (0, 1)),
                ("rare", i % 20000 == 7),
            )
            if on
        ]
        with engine.begin() as conn:
            conn.execute(insert(table(Registration)), rows)
            conn.execute(insert(table(RegistrationTopic)), topics)
    with engine.begin() as conn:
        conn.execute(text("ANALYZE"))
    return time.perf_counter() - started


def walk(
    engine: Engine, app_id: str, target: dict[str, Any], *, paged: bool = False, page: int = PAGE
) -> int:
    """The fan-out's resolution loop without the writes: returns the rows seen.

    `paged=False` is the fan-out as it is (one condition, the cursor added per page);
    `paged=True` builds the condition per page with `page_audience`.
    """
    condition = audience(app_id, target)
    cursor: str | None = None
    seen = 0
    while True:
        if paged:
            condition = page_audience(app_id, target, cursor)
        rows = store.audience_page(engine, condition, cursor, page)
        if not rows:
            return seen
        seen += len(rows)
        cursor = rows[-1][0]
        if len(rows) < page:
            return seen


@dataclass
class Figure:
    store: str
    target: str
    rows: int
    scanned: int  # registrations in the app: the walk reads up to all of them
    seconds: list[float]
    paged_seconds: list[float]


def _timed(fn: Any, repeat: int) -> tuple[int, list[float]]:
    fn()  # warm the buffer cache and the statement cache once
    times, rows = [], 0
    for _ in range(repeat):
        started = time.perf_counter()
        rows = fn()
        times.append(time.perf_counter() - started)
    return rows, times


def measure(engine: Engine, app_id: str, name: str, n: int, repeat: int, label: str) -> Figure:
    target = TARGETS[name]
    rows, times = _timed(lambda: walk(engine, app_id, target), repeat)
    paged_rows, paged_times = _timed(lambda: walk(engine, app_id, target, paged=True), repeat)
    want = expected_rows(name, n)
    if rows != want or paged_rows != want:
        raise AssertionError(f"{label} {name}: resolved {rows}/{paged_rows}, expected {want}")
    return Figure(label, name, rows, n, times, paged_times)


def report(figures: list[Figure], repeat: int) -> None:
    print(
        f"\nResolution: pages of {PAGE} by registration id, median of {repeat} walks.\n"
        "'fan-out' is the loop as worker/fanout.py runs it (one condition); 'per page' "
        "builds it per page with page_audience (cursor inside the subqueries)."
    )
    head = (
        f"{'store':<11} {'target':<11} {'rows':>9} {'fan-out s':>9} {'rows/s':>10} "
        f"{'scanned/s':>10} {'per page s':>10} {'rows/s':>10}"
    )
    print(head)
    print("-" * len(head))
    for f in figures:
        s, p = statistics.median(f.seconds), statistics.median(f.paged_seconds)
        print(
            f"{f.store:<11} {f.target:<11} {f.rows:>9,} {s:>9.2f} {f.rows / s:>10,.0f} "
            f"{f.scanned / s:>10,.0f} {p:>10.2f} {f.rows / p:>10,.0f}"
        )


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000, help="PostgreSQL registrations")
    ap.add_argument("--sqlite-rows", type=int, default=100_000, help="SQLite registrations")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument(
        "--postgres",
        default=os.environ.get("PUSHLINE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432"),
        help="server URL (a database pushline_bench_resolution is created on it)",
    )
    args = ap.parse_args(argv)
    figures: list[Figure] = []

    database = "pushline_bench_resolution"
    url = fresh_postgres_database(args.postgres, database)
    engine = make_engine(url)
    try:
        app_id = create_app(engine)
        took = populate_postgres(url, app_id, args.rows)
        print(f"PostgreSQL: {args.rows:,} registrations loaded in {took:.1f} s", flush=True)
        for name in TARGETS:
            figures.append(measure(engine, app_id, name, args.rows, args.repeat, "PostgreSQL"))
    finally:
        engine.dispose()
        drop_postgres_database(args.postgres, database)  # most of a gigabyte

    with tempfile.TemporaryDirectory() as tmp:
        sqlite_url = f"sqlite:///{Path(tmp) / 'resolution.db'}"
        upgrade(sqlite_url)
        engine = make_engine(sqlite_url)
        app_id = create_app(engine)
        took = populate_sqlite(engine, app_id, args.sqlite_rows)
        print(f"SQLite: {args.sqlite_rows:,} registrations loaded in {took:.1f} s", flush=True)
        for name in TARGETS:
            figures.append(measure(engine, app_id, name, args.sqlite_rows, args.repeat, "SQLite"))
        engine.dispose()
    report(figures, args.repeat)


if __name__ == "__main__":
    main()
