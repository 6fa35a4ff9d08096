"""Worker memory over a long run: does it stay flat?

    python -m bench.soak [--deliveries 1000000] [--devices 100000]   (or `make soak`)

One Stack (API, one worker with concurrency 2, PostgreSQL) sending to the minimal fake
provider; `--devices` APNs registrations; broadcasts to all of them, one after another,
until `--deliveries` Deliveries were recorded SENT. After each broadcast it prints the
worker's resident memory (the Celery main process and its pool children); the first
broadcast is the warm-up. At the end: the change from after the warm-up to the end, and
the largest step between two broadcasts.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from pathlib import Path

import httpx
from rich.console import Console
from sqlalchemy import text

from bench.infra import RssSampler, fake_stack, register_devices, start_fake, stop_on_sigterm
from schemas.db import engine_for

DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/pushline_soak"
DEFAULT_REDIS = "redis://127.0.0.1:6379/8"
BROADCAST = {"target": {"type": "application"}, "payload": {"alert": {"title": "t", "body": "b"}}}
console = Console(width=110)


def broadcast(http: httpx.Client, timeout_s: float) -> str:
    resp = http.post("/v1/messages", json=BROADCAST)
    resp.raise_for_status()
    message_id = str(resp.json()["id"])
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        state = http.get(f"/v1/messages/{message_id}").json()["state"]
        if state in ("done", "failed"):
            return str(state)
        time.sleep(0.2)
    return "timed out"


def main(argv: list[str] | None = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--deliveries", type=int, default=1_000_000)
    p.add_argument("--devices", type=int, default=100_000)
    p.add_argument("--database", default=DEFAULT_DATABASE)
    p.add_argument("--redis", default=DEFAULT_REDIS)
    args = p.parse_args(argv)
    stop_on_sigterm()
    rounds = max(2, -(-args.deliveries // args.devices))
    with tempfile.TemporaryDirectory(prefix="pushline-soak-") as tmp:
        state_dir = Path(tmp)
        fake, port = start_fake(state_dir / "tls", state_dir / "fake.log")
        stack = fake_stack(state_dir, args.database, args.redis, port)
        try:
            stack.start(scheduler=False)
            creds = stack.add_app("soak")
            register_devices(args.database, creds.app_id, {"apns": args.devices})
            rss = RssSampler(stack.procs["worker"].pid)
            sizes: list[float] = []
            total = 0
            with httpx.Client(
                base_url=stack.api_url, headers={"X-API-Key": creds.api_key}, timeout=30
            ) as http:
                for n in range(rounds):
                    started = time.monotonic()
                    state = broadcast(http, timeout_s=max(300.0, args.devices / 100))
                    with engine_for(args.database).begin() as conn:
                        sent = conn.execute(
                            text("SELECT count(*) FROM delivery WHERE status = 'SENT'")
                        ).scalar_one()
                        conn.execute(text("TRUNCATE delivery"))  # keep the table small
                    total += sent
                    sizes.append(rss.tree_rss() / 2**20)
                    console.print(
                        f"broadcast {n + 1}/{rounds}: {state}, {sent:,} SENT in "
                        f"{time.monotonic() - started:.1f}s; {total:,} so far; "
                        f"worker RSS {sizes[-1]:,.1f} MiB"
                    )
        finally:
            stack.stop()
            fake.terminate()
            fake.wait(timeout=10)
    steps = [b - a for a, b in zip(sizes, sizes[1:], strict=False)]
    console.print(
        f"worker RSS after the warm-up broadcast {sizes[0]:,.1f} MiB, at the end "
        f"{sizes[-1]:,.1f} MiB: {sizes[-1] - sizes[0]:+,.1f} MiB over the "
        f"{total - args.devices:,} deliveries after it; largest step between broadcasts "
        f"{max(steps, default=0.0):+,.1f} MiB"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
