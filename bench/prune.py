"""How long pruning a day of 1,000,000 Deliveries takes on PostgreSQL, and whether pushes
keep flowing meanwhile.

    python -m bench.prune [--deliveries 1000000] [--per-message 1000] [--rate 100]

A fresh database and Redis db and one Stack (API, worker, scheduler, the simulators). The
old day is written straight into SQL, 31 days old: `--deliveries` Deliveries in Messages
of `--per-message`. Then `pushline db prune --older-than 30d` runs (the same function the
scheduler calls in small rounds) while a thread pushes to one user, one push at a time and
at most `--rate` a second.
Prints the rows deleted, the time taken and rows/s, and the pushes answered meanwhile
with their answer time p50 / p99 and how many ended SENT.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import threading
import time
from datetime import timedelta
from pathlib import Path

from rich.console import Console
from sqlalchemy import text

from bench.infra import flush_redis, reset_database, stop_on_sigterm
from producer.client import PushlineClient
from producer.stack import Stack
from schemas.db import engine_for
from schemas.retention import prune

console = Console()
DATABASE = "postgresql://postgres@127.0.0.1:5432/pushline_bench_prune"
REDIS = "redis://127.0.0.1:6379/5"

SEED_MESSAGES = """
INSERT INTO message (id, app_id, target, payload, state, total, lane, created_at)
SELECT 'old-' || n, :app, '{"type": "application"}', '{"alert": "old"}', 'done', :per, 'bulk',
       now() - interval '31 days' + n * interval '1 second'
FROM generate_series(1, CAST(:messages AS int)) AS n
"""
SEED_DELIVERIES = """
INSERT INTO delivery (id, message_id, registration_id, app_id, provider, status, code,
                      attempts, created_at, updated_at, sent_at)
SELECT 'old-' || m || '-' || d, 'old-' || m, 'reg-' || d, :app, 'apns', 'SENT', 0, 1,
       now() - interval '31 days', now() - interval '31 days', now() - interval '31 days'
FROM generate_series(CAST(:first AS int), CAST(:last AS int)) AS m,
     generate_series(1, CAST(:per AS int)) AS d
"""


def seed_old_day(url: str, app_id: str, deliveries: int, per_message: int) -> int:
    messages = max(1, deliveries // per_message)
    engine = engine_for(url)
    with engine.begin() as conn:
        conn.execute(text(SEED_MESSAGES), {"app": app_id, "per": per_message, "messages": messages})
    step = max(1, 100_000 // per_message)
    for first in range(1, messages + 1, step):
        with engine.begin() as conn:
            conn.execute(
                text(SEED_DELIVERIES),
                {
                    "app": app_id,
                    "per": per_message,
                    "first": first,
                    "last": min(messages, first + step - 1),
                },
            )
    with engine.begin() as conn:
        conn.execute(text("ANALYZE message; ANALYZE delivery"))
    return messages


class Pusher(threading.Thread):
    """One push to one user every 1/rate s until stopped; keeps each answer's time."""

    def __init__(self, client: PushlineClient, rate: float) -> None:
        super().__init__(daemon=True)
        self.client, self.rate = client, rate
        self.stop = threading.Event()
        self.answers_ms: list[float] = []
        self.ids: list[str] = []

    def run(self) -> None:
        body = {"target": {"type": "users", "usernames": ["live"]}, "payload": {"alert": "x"}}
        next_at = time.monotonic()
        while not self.stop.is_set():
            t0 = time.monotonic()
            self.ids.append(self.client.push(body).id)
            self.answers_ms.append((time.monotonic() - t0) * 1000)
            next_at += 1 / self.rate
            time.sleep(max(0.0, next_at - time.monotonic()))


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--deliveries", type=int, default=1_000_000)
    parser.add_argument("--per-message", type=int, default=1000)
    parser.add_argument("--rate", type=float, default=100.0)
    args = parser.parse_args(argv)
    stop_on_sigterm()
    flush_redis(REDIS)
    reset_database(DATABASE)
    stack = Stack(
        Path(tempfile.mkdtemp(prefix="pushline-bench-prune-")),
        redis_url=REDIS,
        database_url=DATABASE,
        extra_env={"PUSHLINE_RETENTION_DAYS": "0"},  # the benchmark prunes, not the scheduler
    )
    stack.start()
    try:
        creds = stack.add_app("prune")
        client = PushlineClient(stack.api_url, creds.api_key)
        client.register({"token": "iOS:" + "ab" * 32, "username": "live"})
        t0 = time.monotonic()
        messages = seed_old_day(DATABASE, creds.app_id, args.deliveries, args.per_message)
        console.print(
            f"seeded {messages:,} messages / {messages * args.per_message:,} deliveries"
            f" 31 days old in {time.monotonic() - t0:.1f} s"
        )
        pusher = Pusher(client, args.rate)
        pusher.start()
        time.sleep(2)  # pushes flowing before the prune starts
        t0 = time.monotonic()
        done = prune(engine_for(DATABASE), timedelta(days=30))
        took = time.monotonic() - t0
        pusher.stop.set()
        pusher.join()
        report(done.messages, done.deliveries, took, pusher, client)
    finally:
        stack.stop()
    return 0


def report(
    messages: int, deliveries: int, took: float, pusher: Pusher, client: PushlineClient
) -> None:
    deadline = time.monotonic() + 60
    sent = 0
    for message_id in pusher.ids:
        while True:
            st = client.message(message_id)
            if st.state in ("done", "failed") or time.monotonic() > deadline:
                break
            time.sleep(0.05)
        sent += st.by_status.get("SENT", 0)
    answers = sorted(pusher.answers_ms)
    p99 = answers[int(len(answers) * 0.99) - 1] if answers else 0.0
    console.print(
        f"pruned {messages:,} messages and {deliveries:,} deliveries in {took:.1f} s"
        f" ({deliveries / took:,.0f} deliveries/s)"
    )
    console.print(
        f"meanwhile {len(answers):,} pushes answered, p50 {statistics.median(answers):.0f} ms,"
        f" p99 {p99:.0f} ms; {sent:,} of {len(pusher.ids):,} ended SENT"
    )


if __name__ == "__main__":
    raise SystemExit(main())
