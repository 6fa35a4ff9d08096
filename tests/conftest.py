"""Shared fixtures: whole Pushline stacks on the real Redis and PostgreSQL (and on SQLite).

A stack is expensive to start, so one per backend serves the whole session; tests stay
independent by creating their own app and their own tokens.
"""

from __future__ import annotations

import json
import os
import secrets
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import psycopg
import pytest
from sqlmodel import Session

from producer.client import PushlineClient
from producer.stack import Credentials, Stack, free_port
from schemas.api import MessageStatus
from schemas.db import engine_for
from schemas.tables import Registration
from simulators.control import SimulatorControl

DURATIONS = Path(__file__).with_name("durations.json")  # scripts/test_durations.py


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Longest files first (by their last measured time), so the files run side by side
    end together; a file not yet measured counts as a middling one. `make test` keeps
    this order (`--no-loadscope-reorder`: xdist would otherwise order by test count)."""
    try:
        seconds: dict[str, float] = json.loads(DURATIONS.read_text())
    except (OSError, ValueError):
        return
    known = sorted(seconds.values())
    middling = known[len(known) // 2] if known else 0.0
    items.sort(key=lambda it: -seconds.get(it.path.name, middling))  # stable: files stay whole


REDIS = os.environ.get("PUSHLINE_TEST_REDIS", "redis://127.0.0.1:6379")
POSTGRES = os.environ.get("PUSHLINE_TEST_POSTGRES", "postgresql://postgres@127.0.0.1:5432")

# Fast retries so "503 then success" takes a fraction of a second.
# Each test session's Celery keys carry their own prefix: two sessions on one machine (or
# one Redis db) never take each other's tasks.
TEST_ENV = {
    "PUSHLINE_REDIS_KEY_PREFIX": f"t{os.getpid()}:",
    "PUSHLINE_RETRY_BASE_S": "0.05",
    "PUSHLINE_LOG_LEVEL": "INFO",
    "PUSHLINE_REPEAT_EVERY_MIN_S": "1",
    "PUSHLINE_SCHEDULER_TICK_S": "0.2",
}


_made: list[str] = []  # this process's databases, dropped when its session ends


def fresh_postgres(name: str) -> str:
    """A new, empty database on the local server; returns its URL. It is dropped at the
    end of the test session at the latest."""
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        conn.execute(f'CREATE DATABASE "{name}"')
    _made.append(name)
    return f"{POSTGRES}/{name}"


def pytest_sessionfinish() -> None:
    """Drop the databases this process made (after every fixture's teardown): a run of
    the suite made about fifteen, and they had stayed on the shared server."""
    _drop(*_made)


def drop_postgres(url: str) -> None:
    """Drop a database fresh_postgres made (its engines disposed first)."""
    _drop(url.rsplit("/", 1)[1])


def _drop(*names: str) -> None:
    if not names:
        return
    with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as conn:
        for name in names:
            conn.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


def fresh_redis(db: int) -> str:
    """A Redis db for a stack. Not flushed: other sessions may use it too; our keys are
    apart by PUSHLINE_REDIS_KEY_PREFIX."""
    return f"{REDIS}/{db}"


@pytest.fixture(scope="session")
def pg_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(
        tmp_path_factory.mktemp("pg-stack"),
        redis_url=fresh_redis(11),
        database_url=fresh_postgres(f"pushline_test_{os.getpid()}"),
        extra_env=TEST_ENV,
    )
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(scope="session")
def sqlite_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    stack = Stack(
        tmp_path_factory.mktemp("sqlite-stack"), redis_url=fresh_redis(12), extra_env=TEST_ENV
    )
    try:
        yield stack.start()
    finally:
        stack.stop()


@pytest.fixture(params=["postgresql", "sqlite"])
def any_stack(request: pytest.FixtureRequest) -> Stack:
    """The same behaviour, proven on both stores."""
    name = "pg_stack" if request.param == "postgresql" else "sqlite_stack"
    stack: Stack = request.getfixturevalue(name)
    return stack


@pytest.fixture
def stack(pg_stack: Stack) -> Stack:
    return pg_stack


class AppHandle:
    """One app on a running stack with a client holding every role."""

    def __init__(self, stack: Stack, creds: Credentials) -> None:
        self.stack = stack
        self.creds = creds
        self.client = PushlineClient(stack.api_url, creds.api_key)

    def ios(self, username: str | None = None, **kw: str) -> str:
        token = secrets.token_hex(32)
        self.client.register({"token": f"iOS:{token}", "username": username, **kw})
        return token

    def android(self, username: str | None = None, **kw: str) -> str:
        token = f"fcm-{secrets.token_urlsafe(24)}:APA91b"
        self.client.register({"token": f"android:{token}", "username": username, **kw})
        return token

    def huawei(self, username: str | None = None, **kw: object) -> str:
        """A Huawei phone registered with a Push Kit token (provider hms); returns the token."""
        token = f"IQAAAACy{secrets.token_urlsafe(48)}"
        self.client.register({"token": token, "provider": "hms", "username": username, **kw})
        return token

    def web(self, username: str | None = None, **kw: str) -> str:
        """A browser subscribed at the Web Push simulator with the app's VAPID key,
        registered; returns its endpoint (the token)."""
        sub = self.stack.webpush.subscribe_webpush(self.creds.webpush_public_key)
        self.client.register(
            {"token": sub["endpoint"], "keys": sub["keys"], "username": username, **kw}
        )
        return str(sub["endpoint"])

    def registration_for(self, token: str, username: str) -> str:
        page = self.client.registrations(username=username, limit=1000)
        return next(r.id for r in page.items if r.token == token)

    def wait(self, message_id: str, timeout: float = 60.0) -> MessageStatus:
        deadline = time.monotonic() + timeout
        while True:
            st = self.client.message(message_id)
            if st.state in ("done", "failed"):
                return st
            if time.monotonic() > deadline:
                raise AssertionError(f"message {message_id} not final in {timeout}s: {st}")
            time.sleep(0.05)

    def push_users(self, *usernames: str, **payload: object) -> MessageStatus:
        body = {
            "target": {"type": "users", "usernames": list(usernames)},
            "payload": payload or {"alert": {"title": "t", "body": "b"}},
        }
        return self.wait(self.client.push(body).id)


@pytest.fixture
def app(stack: Stack) -> AppHandle:
    return AppHandle(stack, stack.add_app(f"t-{uuid.uuid4().hex[:12]}"))


@pytest.fixture
def any_app(any_stack: Stack) -> AppHandle:
    return AppHandle(any_stack, any_stack.add_app(f"t-{uuid.uuid4().hex[:12]}"))


def accepted(stack_sim_stats: dict[str, object], token: str) -> int:
    counts = stack_sim_stats["accepted"]
    assert isinstance(counts, dict)
    return int(counts.get(token, 0))


def log_tail(stack: Stack, name: str, chars: int = 3000) -> str:
    path: Path = stack.state_dir / f"{name}.log"
    return path.read_text()[-chars:] if path.exists() else ""


def register_bulk(stack: Stack, app_id: str, n: int) -> list[str]:
    """n iOS registrations written straight to the store (REST would only measure the API)."""
    tokens = [secrets.token_hex(32) for _ in range(n)]
    assert stack.database_url
    with Session(engine_for(stack.database_url)) as s:
        s.add_all(
            Registration(app_id=app_id, provider="apns", platform="ios", token=t) for t in tokens
        )
        s.commit()
    return tokens


@dataclass
class Sim:
    """One simulator of a test module's own (`simulator`)."""

    port: int
    control: SimulatorControl
    tls: Path

    @property
    def ca(self) -> str:
        return str(self.tls / "ca.pem")


@contextmanager
def simulator(kind: str, tls: Path) -> Iterator[Sim]:
    """`python -m simulators KIND` on a free port, its TLS material in `tls`."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators", kind, "--port", str(port)],
        env={**os.environ, "PUSHLINE_SIMULATOR_TLS_DIR": str(tls)},
    )
    control = SimulatorControl(f"http://127.0.0.1:{port}")
    try:
        control.wait_ready(30)
        yield Sim(port, control, tls)
    finally:
        proc.terminate()
        proc.wait(10)
