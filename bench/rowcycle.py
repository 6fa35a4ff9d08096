"""What a Delivery's life costs PostgreSQL, step by step, at Delivery fillfactors.

    python -m bench.rowcycle [--pushes 20000] [--fillfactors 85,50] [--repeats 3]

A fresh database per fillfactor, migrated, then `ALTER TABLE delivery SET (fillfactor)`.
Each repeat empties the tables and takes `--pushes` single-device pushes through their
rows' whole life as Pushline writes them: inserted as the API's dispatcher does (32 at a
time), claimed and recorded SENT as a deliver task does (27 at a time, each Message
closed whole). Prints each step's backend CPU microseconds per push (from /proc), how
many of Delivery's updates were HOT (in place, no index entries), and the table's size
after the cycle. The databases are dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics

from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, text

from bench.ids import cpu_s, write_batch
from bench.infra import drop_database, reset_database, stop_on_sigterm
from producer.apps import create_app as create_tenant
from producer.dispatch import Dispatcher
from schemas.db import direct, engine_for, fetch_raw
from schemas.ids import uuid4_str, uuid7_str
from schemas.tables import Registration, table
from worker import store

console = Console()
DATABASE = "postgresql://postgres@127.0.0.1:5432/pushline_bench_rowcycle_{ff}"
INSERTED, CLAIMED = 32, 27  # the closed loop's batch and deliver task sizes
STEPS = ("insert", "claim", "record")


def prepare(ff: int, devices: int) -> tuple[Engine, str, list[str]]:
    reset_database(DATABASE.format(ff=ff))
    engine = engine_for(DATABASE.format(ff=ff))
    with engine.begin() as conn:
        conn.execute(text(f"ALTER TABLE delivery SET (fillfactor = {int(ff)})"))
    app_id = create_tenant(engine, "rowcycle").id
    rids = [uuid4_str() for _ in range(devices)]
    device = {"app_id": app_id, "provider": "apns", "platform": "ios", "active": True}
    with engine.begin() as conn:
        rows = [{**device, "id": rid, "token": os.urandom(32).hex()} for rid in rids]
        conn.execute(table(Registration).insert(), rows)
    return engine, app_id, rids


def _backend(engine: Engine) -> int:
    """The pid of the backend behind the engine's autocommit pool (one connection reused)."""
    with direct(engine).connect() as conn:
        return int(fetch_raw(conn, text("SELECT pg_backend_pid()"), {})[0][0])


def cycle(engine: Engine, app_id: str, rids: list[str]) -> dict[str, float]:
    """Each step's backend CPU µs per push, HOT updates in %, the table's size in KiB."""
    with engine.begin() as conn:
        conn.execute(text("TRUNCATE delivery, message CASCADE"))
        conn.execute(text("SELECT pg_stat_reset()"))
    writer = Dispatcher.__new__(Dispatcher)  # its insert only: no thread, no broker
    writer.engine = engine
    pid, spent = _backend(engine), {}
    t = cpu_s(pid)
    with direct(engine).connect() as conn:
        for at in range(0, len(rids), INSERTED):
            write_batch(conn, writer, app_id, rids[at : at + INSERTED], uuid7_str)
        found = fetch_raw(conn, text("SELECT id, message_id FROM delivery ORDER BY id"), {})
    spent["insert"], t = cpu_s(pid) - t, cpu_s(pid)
    claims = [
        store.claim(engine, [row[0] for row in found[at : at + CLAIMED]], 120, "bench:0")
        for at in range(0, len(found), CLAIMED)
    ]
    spent["claim"], t = cpu_s(pid) - t, cpu_s(pid)
    for claim in claims:
        done = [store.Record(c.id, "SENT", 0, None, "ref", True, {}) for c in claim.deliveries]
        store.record(engine, done, [], [], whole={c.message_id: 1 for c in claim.deliveries})
    spent["record"] = cpu_s(pid) - t
    result = {step: spent[step] * 1e6 / len(rids) for step in STEPS}
    with engine.connect() as conn:
        conn.execute(text("SELECT pg_stat_force_next_flush()"))
        updates, hot, size = conn.execute(
            text(
                "SELECT n_tup_upd, n_tup_hot_upd, pg_relation_size('delivery')"
                " FROM pg_stat_user_tables WHERE relname = 'delivery'"
            )
        ).one()
    return result | {"hot": 100 * hot / max(updates, 1), "kib": size / 1024}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--pushes", type=int, default=20_000)
    p.add_argument("--fillfactors", default="85,50")
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    stop_on_sigterm()
    factors = [int(f) for f in args.fillfactors.split(",")]
    prepared = {ff: prepare(ff, args.pushes) for ff in factors}
    runs: dict[int, list[dict[str, float]]] = {ff: [] for ff in factors}
    for _ in range(args.repeats):
        for ff in factors:  # taking turns
            runs[ff].append(cycle(*prepared[ff]))
    out = Table(title=f"PostgreSQL CPU µs per single-device push, {args.pushes:,} pushes")
    for name in ("fillfactor", *STEPS, "all (runs)", "HOT updates", "table after"):
        out.add_column(name, justify="right")
    for ff, results in runs.items():
        med = {k: statistics.median(r[k] for r in results) for k in results[0]}
        totals = "  ".join(f"{sum(r[s] for s in STEPS):.1f}" for r in results)
        steps = [f"{med[s]:.1f}" for s in STEPS]
        out.add_row(str(ff), *steps, totals, f"{med['hot']:.0f} %", f"{med['kib']:,.0f} KiB")
    console.print(out)
    for ff, (engine, _, _) in prepared.items():
        engine.dispose()
        drop_database(DATABASE.format(ff=ff))


if __name__ == "__main__":
    main()
