"""What writing a single-device push costs PostgreSQL once the tables hold many, with
random (version 4) row ids against time-ordered (version 7) ones.

    python -m bench.ids [--stored 2000000] [--pushes 20000] [--repeats 3]

Two fresh databases, migrated. Each gets `--stored` Messages with one Delivery each,
written straight into SQL with ids of its kind (the version-7 ones minted over the past
hours, as a running service would have), and a checkpoint. Then `--pushes` pushes to
one device go in as the API's dispatcher writes them: resolved and inserted 32 at a
time, on one connection, ids of the same kind. Prints that backend's CPU microseconds
per push (from /proc) and the wall time, taking turns between the two kinds. Both
databases are dropped at the end.
"""

from __future__ import annotations

import argparse
import os
import statistics
import time
from collections.abc import Callable

from rich.console import Console
from rich.table import Table
from sqlalchemy import Connection, Engine, text

from bench.infra import drop_database, reset_database, stop_on_sigterm
from producer.accept import message_row
from producer.apps import create_app as create_tenant
from producer.dispatch import Dispatcher, Handoff, resolve_targets, resolved
from schemas.api import PushRequest
from schemas.db import direct, engine_for, fetch_raw
from schemas.ids import uuid4_str, uuid7_str
from schemas.tables import Registration, table, utcnow

console = Console()
DATABASE = "postgresql://postgres@127.0.0.1:5432/pushline_bench_ids_{kind}"
BATCH = 32
KINDS: dict[str, Callable[[], str]] = {"random (v4)": uuid4_str, "time-ordered (v7)": uuid7_str}

# One id per row, of each kind, written by PostgreSQL itself (:start is Unix ms).
_RANDOM_SQL = "gen_random_uuid()::text"
_ORDERED_SQL = (
    "overlay(overlay(gen_random_uuid()::text placing"
    " substr(lpad(to_hex(:start + 2 * g + {k}), 12, '0'), 1, 8) || '-'"
    " || substr(lpad(to_hex(:start + 2 * g + {k}), 12, '0'), 9, 4) from 1 for 13)"
    " placing '7' from 15 for 1)"
)
def _url(kind: str) -> str:
    return DATABASE.format(kind="v4" if kind.startswith("random") else "v7")


def prepare(kind: str, stored: int, devices: int) -> tuple[Engine, str, list[str]]:
    """A migrated database holding `stored` pushes with ids of `kind`; returns its engine,
    the app id and `devices` registration ids."""
    url = _url(kind)
    reset_database(url)
    engine = engine_for(url)
    app_id = create_tenant(engine, "ids").id
    rids = [uuid4_str() for _ in range(devices)]
    device = {"app_id": app_id, "provider": "apns", "platform": "ios", "active": True}
    rows = [{**device, "id": rid, "token": os.urandom(32).hex()} for rid in rids]
    with engine.begin() as conn:
        conn.execute(table(Registration).insert(), rows)
    t0 = time.perf_counter()
    _seed(engine, kind, app_id, rids[0], stored)
    console.print(f"  {kind}: {stored:,} pushes stored in {time.perf_counter() - t0:.0f} s")
    return engine, app_id, rids


def _seed(engine: Engine, kind: str, app_id: str, rid: str, n: int) -> None:
    ordered = not kind.startswith("random")
    mid, did = (
        (_ORDERED_SQL.format(k=0), _ORDERED_SQL.format(k=1)) if ordered else (_RANDOM_SQL,) * 2
    )
    start = time.time_ns() // 1_000_000 - 2 * n - 60_000  # minted before now, in order
    seed = f"CREATE TEMP TABLE seed AS SELECT g, {mid} AS mid, {did} AS did"
    seed += " FROM generate_series(1, :n) AS g"
    with engine.connect() as conn:
        conn.execute(text(seed), {"n": n, "start": start})
        conn.execute(
            text(
                "INSERT INTO message (id, app_id, target, payload, state, total, lane,"
                " created_at) SELECT mid, :app, '{\"type\": \"device\"}', '{\"alert\": \"old\"}',"
                " 'done', 1, 'priority', now() FROM seed"
            ),
            {"app": app_id},
        )
        conn.execute(
            text(
                "INSERT INTO delivery (id, message_id, registration_id, app_id, provider,"
                " status, code, attempts, created_at, updated_at) SELECT did, mid, :rid, :app,"
                " 'apns', 'SENT', 0, 1, now(), now() FROM seed"
            ),
            {"app": app_id, "rid": rid},
        )
        conn.commit()
        conn.execute(text("CHECKPOINT"))


def cpu_s(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


def write_pushes(
    engine: Engine, app_id: str, rids: list[str], new: Callable[[], str]
) -> tuple[float, float]:
    """Write a push to each of `rids` as the dispatcher does; (backend CPU µs per push,
    wall seconds)."""
    writer = Dispatcher.__new__(Dispatcher)  # its insert only: no thread, no broker
    writer.engine = engine
    with direct(engine).connect() as conn:
        pid = fetch_raw(conn, text("SELECT pg_backend_pid()"), {})[0][0]
        cpu0, t0 = cpu_s(pid), time.perf_counter()
        for at in range(0, len(rids), BATCH):
            write_batch(conn, writer, app_id, rids[at : at + BATCH], new)
        wall, cpu = time.perf_counter() - t0, cpu_s(pid) - cpu0
    return cpu * 1e6 / len(rids), wall


def write_batch(
    conn: Connection, writer: Dispatcher, app_id: str, rids: list[str], new: Callable[[], str]
) -> None:
    batch = []
    for rid in rids:
        body = {"target": {"type": "device", "registration_id": rid}, "payload": {"alert": "x"}}
        row = message_row(app_id, PushRequest.model_validate(body), None, None, utcnow())
        row["id"] = new()
        batch.append(Handoff(row))
    pages = resolve_targets(conn, [h.message for h in batch], 1)
    for handoff, page in zip(batch, pages, strict=True):
        assert page is not None  # one device: never more than the limit
        handoff.deliveries = resolved(handoff.message, page)
        for delivery in handoff.deliveries:
            delivery["id"] = new()
    writer._insert(conn, batch)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--stored", type=int, default=2_000_000)
    p.add_argument("--pushes", type=int, default=20_000)
    p.add_argument("--repeats", type=int, default=3)
    args = p.parse_args()
    stop_on_sigterm()
    console.print(f"{args.pushes:,} single-device pushes written over {args.stored:,} stored")
    prepared = {kind: prepare(kind, args.stored, args.pushes) for kind in KINDS}
    runs: dict[str, list[tuple[float, float]]] = {kind: [] for kind in KINDS}
    for _ in range(args.repeats):
        for kind, new in KINDS.items():
            runs[kind].append(write_pushes(*prepared[kind], new))
    out = Table(title="PostgreSQL CPU per single-device push written")
    for name in ("row ids", "CPU µs per push (median)", "runs", "wall s (median)"):
        out.add_column(name, justify="right")
    for kind, results in runs.items():
        cpus = [c for c, _ in results]
        out.add_row(
            kind,
            f"{statistics.median(cpus):.1f}",
            "  ".join(f"{c:.1f}" for c in cpus),
            f"{statistics.median(w for _, w in results):.2f}",
        )
    console.print(out)
    for kind, (engine, _, _) in prepared.items():
        engine.dispose()
        drop_database(_url(kind))  # a few GB that nothing else reads


if __name__ == "__main__":
    main()
