"""Faults in the middle of a broadcast, on default settings: how long until sending
resumes, how long until every Delivery is final, how many notifications went twice.

    python -m bench.chaos [--devices 20000] [--faults flushall,restart,kill]

Each fault gets a fresh stack: its own redis-server on a free port (never the machine's
shared one), a fresh PostgreSQL database, the simulators slowed to 5 ms a request so the
broadcast is in flight when the fault strikes (after 2,000 notifications accepted).

- flushall: Redis FLUSHALL (the broker loses every task);
- restart: Redis killed and started again empty;
- kill: the worker SIGKILLed and started again.

Prints, per fault: seconds from the fault until the scheduler re-enqueued the lost work
(for a worker kill: until it released the killed processes' leases, once they stopped
beating), seconds until the Message is done, every Delivery's final state, devices never
sent to, and re-sends.
"""

from __future__ import annotations

import argparse
import json
import signal
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

import redis
from rich.console import Console
from rich.table import Table

from bench.infra import RedisServer, register_devices, reset_database, stop_on_sigterm
from producer.client import PushlineClient
from producer.stack import Stack

console = Console()


def strike(fault: str, stack: Stack, server: RedisServer) -> None:
    if fault == "flushall":
        redis.Redis.from_url(server.url).flushall()
    elif fault == "restart":
        server.stop()
        server.start()
    elif fault == "kill":
        stack.kill("worker", signal.SIGKILL)
        stack.start_worker()
    else:
        raise ValueError(fault)


RECOVERY_EVENTS = {
    "recovered work the broker lost",  # the sweep
    "released the leases of a worker process that stopped",  # a process stopped beating
}


def recovery_after(log: Path, since: datetime) -> float | None:
    """Seconds from the fault to the scheduler's first re-enqueue of lost work."""
    for line in log.read_text().splitlines():
        try:
            entry = json.loads(line)
        except ValueError:
            continue
        if entry.get("event") in RECOVERY_EVENTS:
            at = datetime.fromisoformat(entry["timestamp"])
            if at >= since:
                return (at - since).total_seconds()
    return None


def run(fault: str, devices: int) -> list[str]:
    workdir = Path(tempfile.mkdtemp(prefix=f"pushline-chaos-{fault}-"))
    server = RedisServer(workdir)
    server.start()
    database = f"postgresql://postgres@127.0.0.1:5432/pushline_chaos_{fault}"
    reset_database(database)
    stack = Stack(workdir / "stack", redis_url=server.url, database_url=database)
    stack.start()
    try:
        creds = stack.add_app(f"chaos-{fault}")
        client = PushlineClient(stack.api_url, creds.api_key)
        tokens = register_devices(database, creds.app_id, {"apns": devices})["apns"]
        stack.apns.configure(latency_ms=5)
        msg = client.push({"target": {"type": "application"}, "payload": {"alert": "all"}})
        while stack.apns.stats()["accepted_total"] < 2_000:
            time.sleep(0.02)
        wall_fault = datetime.now(UTC)
        strike(fault, stack, server)
        t_fault = time.monotonic()
        while True:
            st = client.message(msg.id)
            if st.state in ("done", "failed") or time.monotonic() - t_fault > 600:
                break
            time.sleep(0.2)
        finished = time.monotonic() - t_fault
        accepted = stack.apns.stats()["accepted"]
        counts = [accepted.get(t, 0) for t in tokens]
        twice = sum(c - 1 for c in counts if c > 1)
        never = sum(1 for c in counts if c == 0)
        recovered = recovery_after(stack.state_dir / "scheduler.log", wall_fault)
        return [
            fault,
            f"{recovered:.1f} s" if recovered is not None else "-",
            f"{finished:.1f} s",
            ", ".join(f"{k} {v:,}" for k, v in sorted(st.by_status.items())),
            f"{never:,}",
            f"{twice:,}",
        ]
    finally:
        stack.stop()
        server.stop()


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--devices", type=int, default=20_000)
    parser.add_argument("--faults", default="flushall,restart,kill")
    args = parser.parse_args(argv)
    stop_on_sigterm()
    table = Table(
        "fault",
        "lost work re-enqueued after",
        "done after",
        "final states",
        "never sent",
        "re-sent",
        title=f"a broadcast to {args.devices:,} APNs devices, default settings",
    )
    for fault in args.faults.split(","):
        table.add_row(*run(fault, args.devices))
    console.print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
