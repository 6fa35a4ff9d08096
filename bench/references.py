"""The two references measured beside Pushline (DESIGN.md §5).

- ceiling: the bare provider clients, no Pushline code, in one asyncio loop in this
  process, against the minimal fake provider (bench/fakeprovider.py), the same server
  Pushline sends to in the run: plain aioapns with 100 in flight, stock firebase-admin
  `send_each_async` 500 messages a call, pywebpush's `send_async` with 100 in flight on one
  aiohttp session (HTTP/1.1: aiohttp speaks no HTTP/2) and one VAPID token minted up front
  (as Pushline reuses its own); all at once for a mix. A ceiling measured against the
  simulators would include what the simulators cost.
- naive: one Celery task per device, each building its own client (`bench.naive`), stock
  firebase-admin for FCM, pywebpush's `webpush()` for Web Push, against the same fake.

Both are rates of a steady state, so they may be measured on fewer notifications than
Pushline's runs: that keeps a full benchmark near ten minutes on two cores. The ceiling is
one loop, so one core; Pushline's worker runs two processes and can pass it where the
client is the bottleneck.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import ssl
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
import firebase_admin
import redis
from aioapns import APNs, NotificationRequest
from aioapns.connection import APNsTLSClientProtocol
from celery import Celery
from firebase_admin import credentials, messaging
from py_vapid import Vapid02
from pywebpush import WebPusher

from bench.infra import flush_redis, wait_until
from bench.naive import BROKER_ENV, DONE_KEY, OK_KEY, TASK, make_app
from producer.stack import Stack
from schemas.tables import App
from worker.fcm import point_at

APNS_IN_FLIGHT = 100
WEBPUSH_IN_FLIGHT = 100
# The FCM client runs ~1,000/s here, flat in N, so 4,000 FCM sends suffice; pywebpush
# (an ECDH and an AES-GCM per message) is no faster, so the same cut serves it.
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
    cpu_us: float | None = None  # this process's CPU per notification (the bare clients)


def ceiling_tokens(tokens: dict[str, list[str]]) -> dict[str, list[str]]:
    """At most CEILING_FCM_MAX FCM (or Web Push) tokens, the other providers cut alike to
    keep the mix."""
    slow = max(len(tokens.get("fcm", [])), len(tokens.get("webpush", [])))
    keep = min(1.0, CEILING_FCM_MAX / slow) if slow else 1.0
    return {p: t[: max(1, round(len(t) * keep))] for p, t in tokens.items() if t}


# --- bare clients against the minimal fake provider (the ceiling) ---------------------------

BARE_MESSAGE = {"title": "t", "body": "b"}
FCM_BATCH = 500  # send_each_async takes at most 500 messages a call


def _apns_client(app: App, port: int, ca: Path) -> APNs:
    ctx = ssl.create_default_context(cafile=str(ca))
    ctx.set_alpn_protocols(["h2"])
    client = APNs(
        key=app.apns_key_pem,
        key_id=app.apns_key_id,
        team_id=app.apns_team_id,
        topic=app.apns_topic,
        ssl_context=ctx,
        use_sandbox=False,
    )
    client.pool.protocol_class = type(
        "Fake", (APNsTLSClientProtocol,), {"APNS_SERVER": "127.0.0.1", "APNS_PORT": port}
    )
    return client


async def bare_apns(
    app: App, tokens: list[str], port: int, ca: Path, in_flight: int = APNS_IN_FLIGHT
) -> float:
    """Plain aioapns, no Pushline code, `in_flight` sends at a time: notifications/s."""
    client = _apns_client(app, port, ca)
    message = {"aps": {"alert": BARE_MESSAGE}}
    await client.send_notification(NotificationRequest(device_token=tokens[0], message=message))
    it = iter(tokens)

    async def lane() -> None:
        for token in it:
            await client.send_notification(NotificationRequest(device_token=token, message=message))

    started = time.perf_counter()
    await asyncio.gather(*(lane() for _ in range(in_flight)))
    elapsed = time.perf_counter() - started
    client.pool.close()
    return len(tokens) / elapsed


def firebase_app(app: App, fcm_url: str, ca: Path) -> firebase_admin.App:
    """A firebase-admin app (uniquely named) for `app`'s service account, sending to
    `fcm_url` and trusting `ca`."""
    os.environ["SSL_CERT_FILE"] = os.environ["REQUESTS_CA_BUNDLE"] = str(ca)
    point_at(fcm_url)
    account = json.loads(app.fcm_service_account or "{}")
    options = {"projectId": account["project_id"]}
    return firebase_admin.initialize_app(
        credentials.Certificate(account), options, name=str(uuid.uuid4())
    )


async def bare_fcm(fapp: firebase_admin.App, tokens: list[str]) -> float:
    """Stock firebase-admin `send_each_async`, 500 messages a call: notifications/s."""
    notification = messaging.Notification(**BARE_MESSAGE)
    messages = [messaging.Message(token=t, notification=notification) for t in tokens]
    batches = [messages[i : i + FCM_BATCH] for i in range(0, len(messages), FCM_BATCH)]
    await messaging.send_each_async(batches[0][:1], app=fapp)  # the OAuth token, once
    started = time.perf_counter()
    for batch in batches:
        await messaging.send_each_async(batch, app=fapp)
    return len(tokens) / (time.perf_counter() - started)


async def bare_webpush(
    app: App,
    endpoints: list[str],
    keys: tuple[str, str],
    ca: Path,
    in_flight: int = WEBPUSH_IN_FLIGHT,
) -> float:
    """pywebpush's `WebPusher.send_async` (aes128gcm per message), `in_flight` at a time on
    one aiohttp session, one VAPID token for the run: notifications/s."""
    assert app.webpush_private_key_pem and app.webpush_subject
    vapid = Vapid02.from_pem(app.webpush_private_key_pem.encode())
    origin = endpoints[0].split("/wpush/")[0]
    claims = {"aud": origin, "sub": app.webpush_subject, "exp": int(time.time()) + 12 * 3600}
    headers = {"authorization": str(vapid.sign(claims)["Authorization"]), "urgency": "high"}
    data = json.dumps({"title": "t", "body": "b"}).encode()
    subscription_keys = {"p256dh": keys[0], "auth": keys[1]}
    ctx = ssl.create_default_context(cafile=str(ca))
    timeout = aiohttp.ClientTimeout(total=10)
    bad = 0
    async with aiohttp.ClientSession(
        connector=aiohttp.TCPConnector(ssl=ctx, limit=in_flight)
    ) as session:

        async def one(endpoint: str) -> None:
            nonlocal bad
            pusher = WebPusher(
                {"endpoint": endpoint, "keys": subscription_keys}, aiohttp_session=session
            )
            resp = await pusher.send_async(data, headers=dict(headers), ttl=60, timeout=timeout)
            if getattr(resp, "status", 0) != 201:
                bad += 1

        await one(endpoints[0])  # the connection pool's first connection
        it = iter(endpoints)

        async def lane() -> None:
            for endpoint in it:
                await one(endpoint)

        started = time.perf_counter()
        await asyncio.gather(*(lane() for _ in range(in_flight)))
        elapsed = time.perf_counter() - started
    if bad:
        raise RuntimeError(f"pywebpush: {bad} of {len(endpoints)} answers were not 201")
    return len(endpoints) / elapsed


def measure_bare(
    app: App,
    tokens: dict[str, list[str]],
    port: int,
    ca: Path,
    fcm_url: str,
    webpush_keys: tuple[str, str] | None = None,
) -> RefRun:
    """The bare clients against the fake, all at once for a mix: the mix's rate."""

    fapp = firebase_app(app, fcm_url, ca) if tokens.get("fcm") else None

    async def main() -> float:
        started = time.perf_counter()
        jobs = []
        if tokens.get("apns"):
            jobs.append(bare_apns(app, tokens["apns"], port, ca))
        if fapp is not None:
            jobs.append(bare_fcm(fapp, tokens["fcm"]))
        if tokens.get("webpush"):
            assert webpush_keys is not None
            jobs.append(bare_webpush(app, tokens["webpush"], webpush_keys, ca))
        await asyncio.gather(*jobs)
        return time.perf_counter() - started

    # The firebase-admin app is left to the process: deleting it closes its HTTP/2 client
    # with a new event loop, which fails for a connection made on this one.
    elapsed = asyncio.run(main())
    n = sum(len(t) for t in tokens.values())
    return RefRun(n / elapsed, elapsed, n, n)


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

    def ok(self) -> int:
        return int(self.redis.get(OK_KEY) or 0)

    def reset_done(self) -> None:
        self.redis.set(DONE_KEY, 0)
        self.redis.set(OK_KEY, 0)

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
    ok = naive.ok()  # after the drain
    warning = None
    if not naive.alive():
        warning = f"naive worker died; see {naive.log_path}"
    elif ok < done:
        warning = f"naive: {ok} of {done} answers were 200"
    return RefRun(done / elapsed, elapsed, ok, done, warning)


def naive_credentials(app: App) -> dict[str, str]:
    """What one naive task carries to build its own clients (it reads no database)."""
    return {
        "app_id": app.id,
        "apns_topic": app.apns_topic or "",
        "apns_key_pem": app.apns_key_pem or "",
        "apns_key_id": app.apns_key_id or "",
        "apns_team_id": app.apns_team_id or "",
        "fcm_service_account": app.fcm_service_account or "",
        "webpush_private_key_pem": app.webpush_private_key_pem or "",
        "webpush_subject": app.webpush_subject or "",
    }
