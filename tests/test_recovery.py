"""Nothing lost when Redis loses its contents: the recovery sweep re-enqueues from SQL."""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
import redis

from bench.infra import RedisServer
from producer.stack import Stack
from tests.conftest import TEST_ENV, AppHandle, fresh_postgres, register_bulk

DEVICES = 20_000
CHUNK = 500
WORKER_PROCESSES = 2


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def sweeping_stack(tmp_path: Path, own_redis: RedisServer) -> Iterator[Stack]:
    env = {
        **TEST_ENV,
        # The broker epoch, not a grace without progress, must bring the work back: a grace
        # this long would outlast the test's wait.
        "PUSHLINE_SWEEP_GRACE_S": "600",
        "PUSHLINE_CHUNK_SIZE": str(CHUNK),
    }
    stack = Stack(
        tmp_path / "stack",
        redis_url=own_redis.url,
        database_url=fresh_postgres(f"pushline_sweep_{uuid.uuid4().hex[:8]}"),
        worker_concurrency=WORKER_PROCESSES,
        extra_env=env,
    )
    stack.start()
    yield stack
    stack.stop()


def broadcast_and_wait_for_progress(stack: Stack, name: str) -> tuple[AppHandle, str, list[str]]:
    app = AppHandle(stack, stack.add_app(name))
    tokens = register_bulk(stack, app.creds.app_id, DEVICES)
    stack.apns.configure(latency_ms=5)  # keep the broadcast in flight long enough to strike
    msg = app.client.push({"target": {"type": "application"}, "payload": {"alert": "all"}})
    deadline = time.monotonic() + 60
    while stack.apns.stats()["accepted_total"] < 2_000:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    return app, msg.id, tokens


def assert_all_delivered(stack: Stack, app: AppHandle, message_id: str, tokens: list[str]) -> None:
    stack.apns.configure(latency_ms=0)
    st = app.wait(message_id, timeout=120)
    assert (st.state, st.by_status) == ("done", {"SENT": DEVICES})
    accepted = stack.apns.stats()["accepted"]
    counts = [accepted.get(t, 0) for t in tokens]
    assert min(counts) == 1
    # Only chunks in flight at the moment of the loss may have been sent twice.
    assert sum(c - 1 for c in counts) <= WORKER_PROCESSES * CHUNK


def test_flushall_in_the_middle_of_a_broadcast_loses_nothing(
    sweeping_stack: Stack, own_redis: RedisServer
) -> None:
    app, message_id, tokens = broadcast_and_wait_for_progress(sweeping_stack, "flush")
    redis.Redis.from_url(own_redis.url).flushall()
    assert app.client.message(message_id).by_status.get("QUEUED", 0) > 0  # work was lost
    assert_all_delivered(sweeping_stack, app, message_id, tokens)


def test_a_redis_restart_in_the_middle_of_a_broadcast_loses_nothing(
    sweeping_stack: Stack, own_redis: RedisServer
) -> None:
    app, message_id, tokens = broadcast_and_wait_for_progress(sweeping_stack, "restart")
    own_redis.stop()
    time.sleep(1)
    own_redis.start()  # empty: no persistence
    assert_all_delivered(sweeping_stack, app, message_id, tokens)
