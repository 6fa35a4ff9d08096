"""The two references measured beside Pushline, against the same simulators (DESIGN.md §5).

- ceiling: the bare provider clients in one asyncio loop in this process — aioapns with
  100 in flight, Pushline's FCM client (worker/fcm.py: firebase-admin's credentials,
  encoding and errors on one httpx HTTP/2 connection) with 100 in flight; both at once
  for a mix;
- naive: one Celery task per device, each building its own client (`bench.naive`), stock
  firebase-admin for FCM.

Both are rates of a steady state, so they may be measured on fewer notifications than
Pushline's runs: that keeps a full benchmark near ten minutes on two cores.

The ceiling is one loop, so one core; Pushline's worker runs two processes and can pass
it where the client is the bottleneck. With the FCM simulator on HTTP/2 + TLS (a run on a
quiet machine, medians of 3, 20,000 devices): all FCM end to end 1,167/s against a
ceiling of 1,023/s (1.14), half and half 1,617/s against 1,608/s; with the simulator on
plain HTTP/1.1 and firebase-admin's own `send_each_async` the FCM ceiling was 220–309/s.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import redis
from celery import Celery

from bench.infra import flush_redis, wait_until
from bench.naive import BROKER_ENV, DONE_KEY, TASK, make_app
from producer.stack import Stack
from schemas.settings import Settings
from schemas.tables import App
from worker.apns import ApnsSender
from worker.fcm import FcmSender
from worker.outcomes import ProviderAnswer
from worker.payloads import build_apns, build_fcm

APNS_IN_FLIGHT = 100
# Pushline's own send_concurrency, on the one HTTP/2 connection the simulator's 100
# concurrent streams allow.
FCM_IN_FLIGHT = 100
# The FCM client runs ~1,000/s here, flat in N, so 4,000 FCM sends suffice.
CEILING_FCM_MAX = 4000
# The naive path runs ~20/s for FCM: a time box, not 2,000 sends, bounds each run.
NAIVE_BUDGET_S = 8.0
NAIVE_AHEAD = 40  # tasks published beyond those answered
REPO = Path(__file__).resolve().parent.parent


@dataclass(frozen=True)
class RefRun:
    rate: float  # notifications/s
    elapsed_s: float
    ok: int  # answered 200 by the simulator
    sent: int  # notifications attempted (answered, for the naive path)
    warning: str | None = None
    foreign: float = 0.0  # share of the machine other processes used meanwhile


def ceiling_tokens(tokens: dict[str, list[str]]) -> dict[str, list[str]]:
    """At most CEILING_FCM_MAX FCM tokens, the other providers cut alike to keep the mix."""
    fcm = len(tokens.get("fcm", []))
    keep = min(1.0, CEILING_FCM_MAX / fcm) if fcm else 1.0
    return {p: t[: max(1, round(len(t) * keep))] for p, t in tokens.items() if t}


def simulator_settings(stack: Stack) -> Settings:
    """Settings pointing the provider clients at this stack's simulators."""
    return Settings().model_copy(
        update={
            "apns_host": "127.0.0.1",
            "apns_sandbox_host": "127.0.0.1",
            "apns_port": stack.apns_port,
            "apns_ca_file": str(stack.state_dir / "tls" / "ca.pem"),
            "fcm_url": stack.env["PUSHLINE_FCM_URL"],
            "fcm_ca_file": stack.env["PUSHLINE_FCM_CA_FILE"],
        }
    )


# --- ceiling -------------------------------------------------------------------------------


async def _apns_all(
    app: App, settings: Settings, tokens: list[str], payload: dict[str, Any]
) -> list[ProviderAnswer]:
    sender = ApnsSender(app, settings)
    req = build_apns(payload)
    sem = asyncio.Semaphore(APNS_IN_FLIGHT)

    async def one(token: str) -> ProviderAnswer:
        async with sem:
            return await sender.send(token, str(uuid.uuid4()), req)

    try:
        return list(await asyncio.gather(*(one(t) for t in tokens)))
    finally:
        sender.close()


async def _fcm_all(
    app: App, settings: Settings, tokens: list[str], payload: dict[str, Any]
) -> list[ProviderAnswer]:
    # Pushline's FCM client: firebase-admin's credentials, encoding and errors, one HTTP/2
    # connection, FCM_IN_FLIGHT requests at a time.
    sender = FcmSender(app, settings.model_copy(update={"send_concurrency": FCM_IN_FLIGHT}))
    parts = build_fcm(payload)
    try:
        return await sender.send_many([(t, parts) for t in tokens])
    finally:
        await sender.aclose()


def measure_ceiling(
    app: App, settings: Settings, tokens: dict[str, list[str]], payload: dict[str, Any]
) -> RefRun:
    async def main() -> tuple[float, list[list[ProviderAnswer]]]:
        # A fresh loop and fresh clients per run: the handshake and OAuth token are part
        # of the cost, as they are for the worker's first chunk.
        started = time.perf_counter()
        jobs = []
        if tokens.get("apns"):
            jobs.append(_apns_all(app, settings, tokens["apns"], payload))
        if tokens.get("fcm"):
            jobs.append(_fcm_all(app, settings, tokens["fcm"], payload))
        results = await asyncio.gather(*jobs)
        return time.perf_counter() - started, results

    elapsed, results = asyncio.run(main())
    n = sum(len(t) for t in tokens.values())
    ok = sum(1 for answers in results for a in answers if a.status == 200)
    warning = None if ok == n else f"ceiling: {ok} of {n} answered 200"
    return RefRun(n / elapsed, elapsed, ok, n, warning)


# --- naive baseline ------------------------------------------------------------------------


class NaiveWorker:
    """`celery -A bench.naive worker` as a subprocess of its own session, fed from here."""

    def __init__(self, stack: Stack, broker_url: str, log_path: Path) -> None:
        self.stack = stack
        self.broker_url = broker_url
        self.log_path = log_path
        self.proc: subprocess.Popen[bytes] | None = None
        self.app: Celery = make_app(broker_url)
        self.redis = redis.Redis.from_url(broker_url)

    def start(self) -> None:
        flush_redis(self.broker_url)
        ca = self.stack.env["PUSHLINE_FCM_CA_FILE"]
        # Stock firebase-admin trusts what the environment names: httpx reads SSL_CERT_FILE
        # and google-auth's requests REQUESTS_CA_BUNDLE; both must name the simulators' CA.
        env = {
            **self.stack.env,
            BROKER_ENV: self.broker_url,
            "SSL_CERT_FILE": ca,
            "REQUESTS_CA_BUNDLE": ca,
        }
        log = open(self.log_path, "ab")  # noqa: SIM115 (lives with the process)
        self.proc = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "celery",
                "-A",
                "bench.naive",
                "worker",
                "--concurrency",
                "2",
                "--pool",
                "prefork",
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-n",
                f"naive-{os.getpid()}@%h",
            ],
            env=env,
            cwd=REPO,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )

    def stop(self) -> None:
        if self.proc is None:
            return
        proc, self.proc = self.proc, None
        if proc.poll() is None:
            try:
                os.killpg(proc.pid, signal.SIGTERM)  # the pool children go with it
                proc.wait(timeout=10)
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
            except ProcessLookupError:
                pass
        self.app.close()
        flush_redis(self.broker_url)  # leave no task behind for a later run
        self.redis.close()

    def done(self) -> int:
        return int(self.redis.get(DONE_KEY) or 0)

    def reset_done(self) -> None:
        self.redis.set(DONE_KEY, 0)

    def feed(
        self, jobs: list[tuple[str, str]], creds: dict[str, str], payload: dict[str, Any]
    ) -> None:
        with self.app.producer_or_acquire() as producer:
            for provider, token in jobs:
                self.app.send_task(TASK, args=[provider, token, creds, payload], producer=producer)

    def drain(self) -> None:
        """Drop the tasks not started yet and let the few in flight finish."""
        self.app.control.purge()
        last, stable_since = -1, time.monotonic()
        while time.monotonic() - stable_since < 1.0:
            now = self.done()
            if now != last:
                last, stable_since = now, time.monotonic()
            time.sleep(0.1)

    def alive(self) -> bool:
        return self.proc is not None and self.proc.poll() is None


def _counts(stack: Stack) -> tuple[int, int]:
    """(answered, accepted) over both simulators."""
    answered = accepted = 0
    for sim in (stack.apns, stack.fcm):
        stats = sim.stats()
        answered += int(stats["requests_total"])
        accepted += int(stats["accepted_total"])
    return answered, accepted


def warm_naive(
    naive: NaiveWorker, creds: dict[str, str], jobs: list[tuple[str, str]], payload: dict[str, Any]
) -> None:
    """Wait for the worker to consume: its start-up is not part of the measured rate."""
    naive.reset_done()
    naive.feed(jobs, creds, payload)
    if not wait_until(lambda: naive.done() >= len(jobs), 60, 0.1):
        raise RuntimeError(f"the naive worker did not answer; see {naive.log_path}")


def measure_naive(
    naive: NaiveWorker, creds: dict[str, str], jobs: list[tuple[str, str]], payload: dict[str, Any]
) -> RefRun:
    """From the first task published to the last one done, or to the time box: the rate is
    what was done by then."""
    stack = naive.stack
    stack.apns.reset()
    stack.fcm.reset()
    naive.reset_done()
    started = time.perf_counter()
    published = done = 0
    # Publish just ahead of the worker: the queue never runs dry, and no time goes into
    # publishing thousands of tasks the time box would throw away.
    while done < len(jobs) and naive.alive():
        if time.perf_counter() - started > NAIVE_BUDGET_S:
            break
        if published < len(jobs) and published - done < NAIVE_AHEAD:
            batch = jobs[published : published + NAIVE_AHEAD]
            naive.feed(batch, creds, payload)
            published += len(batch)
        else:
            time.sleep(0.02)
        done = naive.done()
    elapsed = time.perf_counter() - started
    if done < published:
        naive.drain()
    answered, accepted = _counts(stack)  # after the drain: the simulators' final word
    warning = None
    if not naive.alive():
        warning = f"naive worker died; see {naive.log_path}"
    elif accepted != answered or answered < done:
        warning = f"naive: {accepted} of {answered} answers were 200 ({done} tasks done)"
    return RefRun(done / elapsed, elapsed, accepted, done, warning)


def naive_credentials(app: App) -> dict[str, str]:
    """What one naive task carries to build its own clients (it reads no database)."""
    return {
        "app_id": app.id,
        "apns_topic": app.apns_topic or "",
        "apns_key_pem": app.apns_key_pem or "",
        "apns_key_id": app.apns_key_id or "",
        "apns_team_id": app.apns_team_id or "",
        "fcm_service_account": app.fcm_service_account or "",
    }
