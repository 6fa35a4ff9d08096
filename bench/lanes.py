"""Priority lanes: how long a single-device push waits while a big campaign is sending.

`python -m bench.lanes [--devices 50000] [--singles 100]`

During a broadcast to N devices, S single-device pushes (high priority) are sent one every
50 ms. For each, the latency is enqueue (the Message's created_at, written by the API) to
SENT (its Delivery's sent_at). Printed: median and p99 with the lanes (a campaign worker on
`pushline`, a priority worker on `pushline.priority`) beside the same figure with the lanes
merged (PUSHLINE_PRIORITY_LANE=false: everything in one queue, the same three processes).

One push goes before the campaign and is waited for, so the singles meet workers as a
stack that has been running has them: started, with their database and APNs connections
(TLS, the provider token) open. Without it the first three singles took 95-188 ms. Its
latency, which includes the workers' start, is printed apart.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import Engine, select
from sqlmodel import Session, col

from bench.infra import flush_redis, register_devices, reset_database
from producer.stack import Stack
from schemas.db import engine_for
from schemas.tables import Delivery, Message, Registration

DB = "postgresql://postgres@127.0.0.1:5432/pushline_lanes"
REDIS = "redis://127.0.0.1:6379/7"


def p99(values: list[float]) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(0.99 * (len(ordered) - 1)))]


def push_to(api: httpx.Client, username: str, alert: str) -> str:
    target = {"type": "users", "usernames": [username]}
    payload = {"alert": alert, "priority": "high"}
    return str(api.post("/v1/messages", json={"target": target, "payload": payload}).json()["id"])


def latencies(engine: Engine, ids: list[str]) -> list[float]:
    """Enqueue (the Message's created_at) to SENT, per push."""
    with Session(engine) as s:
        rows = s.execute(
            select(col(Message.created_at), col(Delivery.sent_at))
            .join(Delivery, col(Delivery.message_id) == col(Message.id))
            .where(col(Message.id).in_(ids))
        ).all()
    return [(sent - created).total_seconds() for created, sent in rows if sent]


def scenario(lanes: bool, devices: int, singles: int, console: Console) -> list[float]:
    """The singles' latencies; the warm-up push's is printed."""
    reset_database(DB)
    flush_redis(REDIS)
    env = {"PUSHLINE_PRIORITY_LANE": "true" if lanes else "false", "PUSHLINE_LOG_LEVEL": "WARNING"}
    with Stack(
        Path(tempfile.mkdtemp(prefix="lanes-")), redis_url=REDIS, database_url=DB, extra_env=env
    ) as stack:
        stack.start(worker=False, scheduler=False)
        if lanes:
            stack.start_worker("bulk", concurrency=2, queues="pushline")
            stack.start_worker("priority", concurrency=1, queues="pushline.priority")
        else:
            stack.start_worker("merged", concurrency=3, queues="pushline")
        creds = stack.add_app("lanes")
        register_devices(DB, creds.app_id, {"apns": devices})
        engine = engine_for(DB)
        with Session(engine) as s:
            s.add_all(
                Registration(
                    app_id=creds.app_id,
                    provider="apns",
                    platform="ios",
                    token=f"{i:064x}",
                    username=f"vip{i}" if i < singles else "warm-up",
                )
                for i in range(singles + 1)
            )
            s.commit()
        api = httpx.Client(base_url=stack.api_url, headers={"X-API-Key": creds.api_key})
        warm_up = push_to(api, "warm-up", "warm-up")
        while api.get(f"/v1/messages/{warm_up}").json()["state"] not in {"done", "failed"}:
            time.sleep(0.02)
        campaign = api.post(
            "/v1/messages", json={"target": {"type": "application"}, "payload": {"alert": "sale"}}
        ).json()["id"]
        while stack.apns.stats()["accepted_total"] < min(5000, devices // 10):
            time.sleep(0.05)
        ids = []
        for i in range(singles):
            ids.append(push_to(api, f"vip{i}", "your code is 123456"))
            time.sleep(0.05)
        deadline = time.monotonic() + 600
        while time.monotonic() < deadline:
            states = {api.get(f"/v1/messages/{m}").json()["state"] for m in [*ids, campaign]}
            if states <= {"done", "failed"}:
                break
            time.sleep(0.5)
        found = latencies(engine, ids)
        first = latencies(engine, [warm_up])
        console.print(
            f"  lanes={'on' if lanes else 'merged'}: {len(found)} single pushes SENT "
            f"while {devices} devices were being sent to; the warm-up push, sent as the "
            f"workers started: {first[0] * 1000 if first else float('nan'):.0f} ms"
        )
        return found


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawTextHelpFormatter)
    ap.add_argument("--devices", type=int, default=50_000)
    ap.add_argument("--singles", type=int, default=100)
    args = ap.parse_args()
    console = Console()
    with_lanes = scenario(True, args.devices, args.singles, console)
    merged = scenario(False, args.devices, args.singles, console)
    table = Table(
        title=f"single-device push, enqueue → SENT, during a {args.devices:,}-device broadcast"
    )
    for c in ("", "median s", "p99 s"):
        table.add_column(c, justify="right" if c else "left")
    table.add_row("priority lane", f"{statistics.median(with_lanes):.3f}", f"{p99(with_lanes):.3f}")
    table.add_row("lanes merged", f"{statistics.median(merged):.3f}", f"{p99(merged):.3f}")
    table.add_row(
        "merged / lane",
        f"{statistics.median(merged) / statistics.median(with_lanes):.1f}×",
        f"{p99(merged) / p99(with_lanes):.1f}×",
    )
    console.print(table)


if __name__ == "__main__":
    main()
