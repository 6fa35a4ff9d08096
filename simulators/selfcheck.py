"""Throughput check of the fake APNs: N aioapns sends, M in flight, prints req/s.

    python -m simulators.selfcheck [--count 5000] [--concurrency 100]
                                   [--port P --control-port C --tls-dir D]

Without --port it starts its own simulator subprocess. Client and server share this machine,
so the figure is a floor for the simulator's ceiling, not the ceiling itself.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import re
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from aioapns import APNs, NotificationRequest
from aioapns.connection import APNsTLSClientProtocol
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from simulators.apns import client_ssl_context
from simulators.control import SimulatorControl

_READY = re.compile(r"listening on [^:]+:(\d+) \(control :(\d+)\)")


def start_apns(tls_dir: Path) -> tuple[subprocess.Popen[str], int, int]:
    """Start `python -m simulators apns` on free ports; returns (process, port, control)."""
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators", "apns", "--port", "0", "--control-port", "0"]
        + ["--tls-dir", str(tls_dir)],
        stdout=subprocess.PIPE,
        text=True,
        cwd=Path(__file__).resolve().parent.parent,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    match = _READY.search(line)
    if match is None:
        proc.kill()
        raise RuntimeError(f"simulator did not start: {line!r}")
    return proc, int(match.group(1)), int(match.group(2))


def _cpu_seconds(pid: int) -> float:
    """User+system CPU time of a process (Linux /proc)."""
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def run(port: int, ca: Path, key_pem: str, count: int, concurrency: int) -> float:
    class Protocol(APNsTLSClientProtocol):
        APNS_SERVER = "127.0.0.1"
        APNS_PORT = port

    apns = APNs(
        key=key_pem,
        key_id="SELFCHECK",
        team_id="TEAM",
        topic="com.example.selfcheck",
        ssl_context=client_ssl_context(ca),
        max_connections=1,
    )
    apns.pool.protocol_class = Protocol
    sem = asyncio.Semaphore(concurrency)
    tokens = [f"{i:064x}" for i in range(count)]
    failures = 0

    async def one(token: str) -> None:
        nonlocal failures
        async with sem:
            result = await asyncio.wait_for(
                apns.send_notification(
                    NotificationRequest(device_token=token, message={"aps": {"alert": "x"}})
                ),
                30,
            )
            if not result.is_successful:
                failures += 1

    await one(tokens[0])  # connect + TLS handshake outside the timed part
    start = time.perf_counter()
    await asyncio.gather(*(one(t) for t in tokens[1:]))
    elapsed = time.perf_counter() - start
    if failures:
        raise RuntimeError(f"{failures} sends failed")
    return (count - 1) / elapsed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--count", type=int, default=5000)
    parser.add_argument("--concurrency", type=int, default=100)
    parser.add_argument("--port", type=int)
    parser.add_argument("--control-port", type=int)
    parser.add_argument("--tls-dir", type=Path)
    args = parser.parse_args(argv)

    tmp = tempfile.TemporaryDirectory()
    tls_dir: Path = args.tls_dir or Path(tmp.name)
    proc = None
    if args.port is None:
        proc, port, control_port = start_apns(tls_dir)
    else:
        port, control_port = args.port, args.control_port
    try:
        key = ec.generate_private_key(ec.SECP256R1())
        key_pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        ).decode()
        with SimulatorControl(f"http://127.0.0.1:{control_port}") as ctl:
            ctl.wait_ready(10)
            ctl.reset()
            ctl.register_apns_key("SELFCHECK", "TEAM", private_key_pem=key_pem)
            # Capture off: measure the protocol path, not the debugging aid.
            ctl.configure(capture_requests=False)
            cpu_before = _cpu_seconds(proc.pid) if proc is not None else None
            rate = asyncio.run(run(port, tls_dir / "ca.pem", key_pem, args.count, args.concurrency))
            cpu_after = _cpu_seconds(proc.pid) if proc is not None else None
            stats = ctl.stats()
        print(
            f"apns simulator: {rate:,.0f} req/s ({args.count} sends, {args.concurrency} in "
            f"flight, 1 connection, accepted {stats['accepted_total']}, cpus {os.cpu_count()})"
        )
        if cpu_before is not None and cpu_after is not None:
            # Server CPU per request bounds what one core could serve with a faster client.
            per_req = (cpu_after - cpu_before) / args.count
            print(
                f"simulator CPU: {per_req * 1e6:,.0f} us/request "
                f"-> single-core ceiling ~{1 / per_req:,.0f} req/s"
            )
    finally:
        if proc is not None:
            proc.terminate()
            proc.wait(10)
        tmp.cleanup()
    return 0


if __name__ == "__main__":
    sys.exit(main())
