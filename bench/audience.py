"""How fast `POST /v1/audience` counts a target over 1,000,000 registrations on PostgreSQL.

    python -m bench.audience [--rows N] [--repeat K] [--postgres URL]

Builds one app of N registrations (1,000,000 by default; topics and custom attributes as
bench/resolution.py generates them) in its own PostgreSQL database, then times the count
the API answers with (`producer.audience.count_audience`, the very function the route
calls, grouped by provider and platform) for an application, a topic and an attribute
target (an Infobip MULTIPLE over a custom attribute, and one over device attributes and a
custom one). Prints the median and the slowest of K counts per target, then drops the
database.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Any

import psycopg

from bench.resolution import (
    _pg_conninfo,
    create_app,
    drop_postgres_database,
    fresh_postgres_database,
    populate_postgres,
)
from producer.audience import count_audience
from schemas.api import AudienceRequest
from schemas.db import make_engine

GOAL_S = 1.0  # the bound for one estimate

TARGETS: dict[str, dict[str, Any]] = {
    "application": {"type": "application"},
    "topic": {"type": "topic", "topics": ["news", "sport"]},
    "attribute": {
        "type": "destinations",
        "destinations": [{"type": "MULTIPLE", "$and": [{"tier": "gold"}]}],
    },
    "attributes+device": {
        "type": "destinations",
        "destinations": [
            {
                "type": "MULTIPLE",
                "$and": [{"platform": "iOS"}, {"osVersion": "18"}, {"tier": "gold"}],
            }
        ],
    },
}


def expected(name: str, n: int) -> int:
    """How many of the generated devices each target reaches (bench/resolution.py's rules)."""
    rules = {
        "application": lambda i: True,
        "topic": lambda i: i % 2 == 0 or i % 4 == 1,
        "attribute": lambda i: i % 5 == 0,
        "attributes+device": lambda i: i % 4 == 2 and i % 5 == 0,
    }
    return sum(1 for i in range(1, n + 1) if rules[name](i))


def vacuum(url: str) -> None:
    """What autovacuum does to a table soon after a load (visibility map, statistics), so
    index-only scans are open to the planner as in a running install."""
    with psycopg.connect(_pg_conninfo(url), autocommit=True) as conn:
        for name in ("registration", "registration_topic"):
            conn.execute(f"VACUUM ANALYZE {name}")


def main(argv: list[str] | None = None) -> None:
    ap = argparse.ArgumentParser(description=(__doc__ or "").split("\n\n")[0])
    ap.add_argument("--rows", type=int, default=1_000_000)
    ap.add_argument("--repeat", type=int, default=5)
    ap.add_argument(
        "--postgres",
        default=os.environ.get("PUSHLINE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432"),
        help="server URL (no database); a database of its own is created and dropped",
    )
    args = ap.parse_args(argv)
    database = "pushline_bench_audience"
    url = fresh_postgres_database(args.postgres, database)
    engine = make_engine(url)
    try:
        app_id = create_app(engine)
        took = populate_postgres(url, app_id, args.rows)
        print(f"PostgreSQL: {args.rows:,} registrations loaded in {took:.1f} s", flush=True)
        vacuum(url)
        print(f"\nPOST /v1/audience's count, median and slowest of {args.repeat} (goal ≤ 1 s)")
        head = f"{'target':<18} {'devices':>9} {'median s':>9} {'max s':>7}  goal"
        print(head)
        print("-" * len(head))
        for name, target in TARGETS.items():
            request = AudienceRequest.model_validate({"target": target})
            count_audience(engine, app_id, request)  # warm the buffer cache once
            times, total = [], 0
            for _ in range(args.repeat):
                started = time.perf_counter()
                total = count_audience(engine, app_id, request).total
                times.append(time.perf_counter() - started)
            want = expected(name, args.rows)
            if total != want:
                raise AssertionError(f"{name}: counted {total}, expected {want}")
            med, worst = statistics.median(times), max(times)
            ok = "met" if worst <= GOAL_S else "MISSED"
            print(f"{name:<18} {total:>9,} {med:>9.3f} {worst:>7.3f}  {ok}", flush=True)
    finally:
        engine.dispose()
        drop_postgres_database(args.postgres, database)
    print(f"load: {os.getloadavg()[0]:.2f} {os.getloadavg()[1]:.2f} {os.getloadavg()[2]:.2f}")


if __name__ == "__main__":
    main()
