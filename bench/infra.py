"""What the benchmark needs around Pushline: clean stores, bulk devices, memory sampling."""

from __future__ import annotations

import contextlib
import re
import secrets
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NoReturn

import psutil
import psycopg
import redis
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat
from psycopg import sql
from sqlalchemy import insert, make_url, text

from producer.stack import Stack, free_port
from schemas.db import engine_for, normalise_url, upgrade
from schemas.tables import Registration, new_id, table, utcnow
from schemas.webpush import b64url

# --- stores --------------------------------------------------------------------------------


def flush_redis(url: str) -> None:
    """Empty one Redis db: a scenario must not inherit queued or unacked tasks."""
    client = redis.Redis.from_url(url)
    try:
        client.flushdb()
    finally:
        client.close()


def naive_redis_url(url: str) -> str:
    """The same server, the next db number: the naive baseline's queue stays apart."""
    head, _, tail = url.rpartition("/")
    if head.count("/") >= 2 and tail.isdigit():
        return f"{head}/{(int(tail) + 1) % 16}"
    return url.rstrip("/") + "/6"


def _psycopg_conninfo(url: str, database: str | None = None) -> str:
    u = make_url(normalise_url(url)).set(drivername="postgresql")
    if database is not None:
        u = u.set(database=database)
    return u.render_as_string(hide_password=False)


def ensure_postgres_database(url: str) -> None:
    """Create the benchmark's database when absent (CREATE DATABASE cannot run in a tx)."""
    name = make_url(normalise_url(url)).database
    assert name, "the database URL must name a database"
    for maintenance in ("postgres", "template1"):
        try:
            conn = psycopg.connect(_psycopg_conninfo(url, maintenance), autocommit=True)
        except psycopg.OperationalError:
            continue
        with conn:
            found = conn.execute("SELECT 1 FROM pg_database WHERE datname = %s", (name,)).fetchone()
            if not found:
                conn.execute(sql.SQL("CREATE DATABASE {}").format(sql.Identifier(name)))
        return
    raise RuntimeError(f"cannot reach a maintenance database on {url}")


def drop_database(url: str) -> None:
    """Drop a benchmark's own PostgreSQL database (its engines disposed first)."""
    name = make_url(normalise_url(url)).database
    assert name, "the database URL must name a database"
    with psycopg.connect(_psycopg_conninfo(url, "postgres"), autocommit=True) as conn:
        drop = sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)")
        conn.execute(drop.format(sql.Identifier(name)))


def reset_database(url: str) -> None:
    """Drop every table and migrate from nothing, so each scenario starts from equal state."""
    engine_for(url).dispose()  # our own pooled connections would block DROP SCHEMA
    if normalise_url(url).startswith("postgresql"):
        ensure_postgres_database(url)
        with psycopg.connect(_psycopg_conninfo(url), autocommit=True) as conn:
            conn.execute("DROP SCHEMA public CASCADE")
            conn.execute("CREATE SCHEMA public")
    elif url.startswith("sqlite:///"):
        path = Path(url[len("sqlite:///") :])
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)
    else:
        raise ValueError(f"unsupported database URL {url!r}")
    upgrade(url)


def truncate_messages(url: str) -> None:
    """Forget earlier runs' Messages and Deliveries: every repeat writes into equal tables."""
    with engine_for(url).begin() as conn:
        if conn.dialect.name == "postgresql":
            # CASCADE: tables that point at a Message (inbox entries) go with it.
            conn.execute(text("TRUNCATE delivery, message CASCADE"))
        else:
            conn.execute(text("DELETE FROM delivery"))
            conn.execute(text("DELETE FROM message"))


# --- a Redis of one's own ---------------------------------------------------------------------


class RedisServer:
    """A Redis of the test's own, so it can be flushed and restarted without hurting others."""

    def __init__(self, workdir: Path) -> None:
        self.port = free_port()
        self.workdir = workdir
        self.proc: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        self.proc = subprocess.Popen(
            [
                "redis-server",
                "--port",
                str(self.port),
                "--bind",
                "127.0.0.1",
                "--save",
                "",
                "--appendonly",
                "no",
                "--dir",
                str(self.workdir),
            ],
            stdout=subprocess.DEVNULL,
        )
        client = redis.Redis.from_url(self.url)
        for _ in range(100):
            try:
                client.ping()
                return
            except redis.ConnectionError:
                time.sleep(0.05)
        raise RuntimeError("redis-server did not start")

    def stop(self) -> None:
        if self.proc is not None:
            self.proc.kill()
            self.proc.wait()
            self.proc = None


# --- devices -------------------------------------------------------------------------------


def apns_token() -> str:
    return secrets.token_hex(32)  # 64 hex characters, as iOS hands them out


def fcm_token() -> str:
    # Real FCM tokens are ~150 characters of [A-Za-z0-9_:-]; token_urlsafe uses that set.
    return f"{secrets.token_urlsafe(16)}:APA91b{secrets.token_urlsafe(96)}"


#: (p256dh, auth) of one browser key pair, shared by every benchmark subscription: each
#: push is still encrypted on its own (a fresh ephemeral key and salt every time).
_WEB_KEYS: tuple[str, str] | None = None


def webpush_keys() -> tuple[str, str]:
    global _WEB_KEYS
    if _WEB_KEYS is None:
        key = ec.generate_private_key(ec.SECP256R1())
        raw = key.public_key().public_bytes(Encoding.X962, PublicFormat.UncompressedPoint)
        _WEB_KEYS = (b64url(raw), b64url(secrets.token_bytes(16)))
    return _WEB_KEYS


def register_devices(
    url: str, app_id: str, counts: dict[str, int], webpush_origin: str | None = None
) -> dict[str, list[str]]:
    """Insert Registration rows in bulk (the REST path would only measure the API).
    Web Push subscriptions get endpoints under `webpush_origin` (the fake provider)."""
    now = utcnow()
    tokens: dict[str, list[str]] = {}
    rows: list[dict[str, object]] = []
    for provider, n in counts.items():
        # Every row names the same columns: one executemany statement serves them all.
        extra: dict[str, object] = {"webpush_p256dh": None, "webpush_auth": None}
        if provider == "webpush":
            assert webpush_origin, "Web Push subscriptions need the push service's origin"
            tokens[provider] = [
                f"{webpush_origin}/wpush/{secrets.token_urlsafe(24)}" for _ in range(n)
            ]
            p256dh, auth = webpush_keys()
            extra = {"webpush_p256dh": p256dh, "webpush_auth": auth}
        else:
            make = apns_token if provider == "apns" else fcm_token
            tokens[provider] = [make() for _ in range(n)]
        platform = {"apns": "ios", "webpush": "web"}.get(provider, "android")
        rows.extend(
            {
                "id": new_id(),
                "app_id": app_id,
                "provider": provider,
                "token": t,
                "platform": platform,
                "active": True,
                "created_at": now,
                "updated_at": now,
                **extra,
            }
            for t in tokens[provider]
        )
    with engine_for(url).begin() as conn:
        for start in range(0, len(rows), 5000):
            conn.execute(insert(table(Registration)), rows[start : start + 5000])
        if conn.dialect.name == "postgresql":
            conn.execute(text("ANALYZE registration"))  # plan the fan-out on real row counts
    return tokens


# --- memory --------------------------------------------------------------------------------


@dataclass
class RssSampler:
    """Peak RSS of a process tree (the Celery main process and its pool children)."""

    pid: int
    interval_s: float = 0.2
    peak_bytes: int = 0

    def __post_init__(self) -> None:
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def tree_rss(self) -> int:
        try:
            root = psutil.Process(self.pid)
            procs = [root, *root.children(recursive=True)]
        except psutil.NoSuchProcess:
            return 0
        total = 0
        for p in procs:
            with contextlib.suppress(psutil.NoSuchProcess):  # a pool child replaced mid-sample
                total += p.memory_info().rss
        return total

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak_bytes = max(self.peak_bytes, self.tree_rss())
            self._stop.wait(self.interval_s)

    def __enter__(self) -> RssSampler:
        self._thread.start()
        return self

    def __exit__(self, *_: object) -> None:
        self._stop.set()
        self._thread.join(timeout=2)
        self.peak_bytes = max(self.peak_bytes, self.tree_rss())

    @property
    def peak_mib(self) -> float:
        return self.peak_bytes / 2**20


def tree_pids(pid: int) -> set[int]:
    try:
        root = psutil.Process(pid)
        return {pid, *(c.pid for c in root.children(recursive=True))}
    except psutil.NoSuchProcess:
        return set()


# Redis and PostgreSQL's own helpers serve the benchmark too, so their CPU cannot be told
# apart: never "foreign". A PostgreSQL backend names its database in its process title, so
# a backend serving another database (somebody else's test suite) is foreign.
_BACKEND = re.compile(r"postgres: [^:]+: \S+ (\S+) (?:\S+\(\d+\)|\[local\])")


def _foreign_candidate(name: str, cmdline: list[str] | None, database: str | None) -> bool:
    if name.startswith("redis-server"):
        return False
    if name.startswith("postgres"):
        title = " ".join(cmdline or [])
        m = _BACKEND.match(title)
        return bool(m and database and m.group(1) != database)
    return True


def _cpu_by_pid(database: str | None) -> dict[int, tuple[float, float]]:
    """(create time, user+system seconds) of every process that may be foreign."""
    out = {}
    for p in psutil.process_iter(["create_time", "cpu_times", "name", "cmdline"]):
        times = p.info["cpu_times"]
        if times is not None and _foreign_candidate(
            p.info["name"] or "", p.info["cmdline"], database
        ):
            out[p.pid] = (p.info["create_time"], times.user + times.system)
    return out


@dataclass
class ForeignLoad:
    """CPU that processes outside the benchmark used during a run, as a share of the machine.

    Two cores are easily disturbed (a test suite, a bulk load into another database): a run
    that shared them says so rather than quietly reporting a low number.
    """

    ours: Callable[[], set[int]]
    database: str | None = None  # our PostgreSQL database; backends of others are foreign
    share: float = 0.0

    def __enter__(self) -> ForeignLoad:
        self._started = time.monotonic()
        self._before = _cpu_by_pid(self.database)
        return self

    def __exit__(self, *_: object) -> None:
        elapsed = time.monotonic() - self._started
        ours = self.ours()
        busy = 0.0
        for pid, (created, cpu) in _cpu_by_pid(self.database).items():
            if pid in ours:
                continue
            before = self._before.get(pid)
            # A pid new since the start (or reused) spent all its CPU during the run.
            busy += cpu - (before[1] if before and before[0] == created else 0.0)
        self.share = max(0.0, busy) / (elapsed * (psutil.cpu_count() or 1))


def database_name(url: str) -> str | None:
    u = make_url(normalise_url(url))
    return u.database if u.get_backend_name() == "postgresql" else None


def wait_until(predicate: Callable[[], bool], timeout_s: float, interval_s: float = 0.05) -> bool:
    deadline = time.monotonic() + timeout_s
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(interval_s)
    return False


# --- the minimal fake provider -------------------------------------------------------------


def start_fake(tls_dir: Path, log: Path) -> tuple[subprocess.Popen[bytes], int]:
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "bench.fakeprovider"]
        + ["--port", str(port), "--tls-dir", str(tls_dir)],
        stdout=open(log, "wb"),  # noqa: SIM115 (lives with the process)
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if b"ready" in log.read_bytes():
            return proc, port
        if proc.poll() is not None:
            raise RuntimeError(f"fake provider exited: {log.read_text()[-500:]}")
        time.sleep(0.05)
    raise TimeoutError("fake provider did not start")


def fake_stack(
    state_dir: Path,
    database: str,
    redis_url: str,
    fake_port: int,
    env: dict[str, str] | None = None,
    **kw: Any,
) -> Stack:
    """A Stack on a fresh database and Redis db whose APNs host is the fake provider (not
    started yet)."""
    flush_redis(redis_url)
    reset_database(database)
    return Stack(
        state_dir=state_dir,
        redis_url=redis_url,
        database_url=database,
        extra_env={"PUSHLINE_APNS_PORT": str(fake_port), **(env or {})},
        **kw,
    )


def stop_on_sigterm() -> None:
    """SIGTERM unwinds through the `finally` blocks that stop a benchmark's processes."""

    def _terminate(signum: int, _frame: object) -> NoReturn:
        raise SystemExit(128 + signum)

    signal.signal(signal.SIGTERM, _terminate)


# --- CPU per process group -------------------------------------------------------------------


def _cpu(pids: set[int]) -> float:
    total = 0.0
    for pid in pids:
        try:
            t = psutil.Process(pid).cpu_times()
        except psutil.NoSuchProcess:
            continue
        total += t.user + t.system
    return total


def named_pids(prefix: str) -> set[int]:
    procs = psutil.process_iter(["name"])
    return {p.pid for p in procs if (p.info["name"] or "").startswith(prefix)}


@dataclass
class CpuMeter:
    """CPU seconds each group of processes (API, worker, PostgreSQL…) spent in a block."""

    groups: dict[str, Callable[[], set[int]]]

    def __enter__(self) -> CpuMeter:
        self.before = {k: _cpu(f()) for k, f in self.groups.items()}
        return self

    def __exit__(self, *_: object) -> None:
        self.spent = {k: _cpu(f()) - self.before[k] for k, f in self.groups.items()}
