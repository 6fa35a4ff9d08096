"""Single-device pushes: resolved when accepted, carried many Messages to a deliver task,
delivered once each; a killed worker or a PostgreSQL restart loses nothing."""

from __future__ import annotations

import contextlib
import os
import shutil
import subprocess
import tempfile
import time
import uuid
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx
import psycopg
import pytest
from sqlalchemy import Engine, func, select
from sqlmodel import Session, col

from producer import Unavailable, accept_push
from producer.apps import create_app as create_tenant
from producer.stack import Stack, free_port
from schemas.db import engine_for, upgrade
from schemas.settings import Settings
from schemas.tables import Delivery, Message, Registration
from tests.conftest import (
    POSTGRES,
    TEST_ENV,
    AppHandle,
    drop_postgres,
    fresh_postgres,
    fresh_redis,
    log_tail,
)


def _push(app: AppHandle, registration_id: str, text: str, priority: str) -> str:
    r = httpx.post(
        f"{app.stack.api_url}/v1/messages",
        headers={"X-API-Key": app.creds.api_key},
        json={
            "target": {"type": "device", "registration_id": registration_id},
            "payload": {"alert": {"title": "code", "body": text}, "priority": priority},
        },
        timeout=30,
    )
    assert r.status_code == 202, r.text
    return str(r.json()["id"])


def _registration_ids(app: AppHandle, tokens: list[str]) -> dict[str, str]:
    page = app.client.registrations(limit=1000)
    by_token = {r.token: r.id for r in page.items}
    return {t: by_token[t] for t in tokens}


def _push_each_and_wait(
    app: AppHandle, n: int, *, latency_ms: int, until_accepted: int
) -> tuple[list[str], list[str]]:
    """n iOS devices, a push to each (arriving together) with the simulator slowed down;
    returns (tokens, Message ids) once `until_accepted` notifications reached it."""
    tokens = [app.ios() for _ in range(n)]
    rids = _registration_ids(app, tokens)
    app.stack.apns.configure(latency_ms=latency_ms)
    with ThreadPoolExecutor(max_workers=16) as pool:
        ids = list(pool.map(lambda t: _push(app, rids[t], t[:12], "high"), tokens))
    deadline = time.monotonic() + 30
    while app.stack.apns.stats()["accepted_total"] < until_accepted:
        assert time.monotonic() < deadline, log_tail(app.stack, "worker")
        time.sleep(0.01)
    return tokens, ids


def _wait_all(stack: Stack, message_ids: list[str], timeout: float = 90.0) -> dict[str, Message]:
    assert stack.database_url
    deadline = time.monotonic() + timeout
    while True:
        with Session(engine_for(stack.database_url)) as s:
            rows = s.execute(select(Message).where(col(Message.id).in_(message_ids))).scalars()
            messages = {m.id: m for m in rows}
        if all(m.state in ("done", "failed") for m in messages.values()):
            return messages
        assert time.monotonic() < deadline, log_tail(stack, "worker")
        time.sleep(0.1)


def test_single_device_pushes_of_several_apps_and_both_lanes_are_each_delivered_once(
    any_stack: Stack,
) -> None:
    apps = [AppHandle(any_stack, any_stack.add_app(f"tx-{uuid.uuid4().hex[:8]}")) for _ in "abc"]
    jobs: list[tuple[AppHandle, str, str, str, str]] = []  # app, token, rid, text, priority
    for a in apps:
        tokens = [a.ios() for _ in range(3)] + [a.android() for _ in range(3)]
        rids = _registration_ids(a, tokens)
        for i, token in enumerate(tokens):
            for priority in ("high", "normal"):
                jobs.append((a, token, rids[token], f"{token[:10]}-{priority}-{i}", priority))
    with ThreadPoolExecutor(max_workers=16) as pool:  # they arrive together
        ids = list(pool.map(lambda j: _push(j[0], j[2], j[3], j[4]), jobs))
    messages = _wait_all(any_stack, ids)
    assert {m.state for m in messages.values()} == {"done"}
    assert {m.lane for m in messages.values()} == {"priority", "bulk"}
    for a in apps:
        for token in {j[1] for j in jobs if j[0] is a}:
            sent = [j[3] for j in jobs if j[1] == token]
            if token.startswith("fcm-"):
                seen = a.stack.fcm.requests(token)
                got = [r["body"]["message"]["notification"]["body"] for r in seen]
            else:
                got = [r["body"]["aps"]["alert"]["body"] for r in a.stack.apns.requests(token)]
            assert sorted(got) == sorted(sent)  # exactly its own pushes, once each


def test_a_single_device_push_needs_no_fan_out_and_its_delivery_is_written_when_accepted(
    app: AppHandle,
) -> None:
    token = app.ios()
    rid = _registration_ids(app, [token])[token]
    app.stack.apns.configure(latency_ms=300)  # hold the send: the rows are read before it ends
    try:
        message_id = _push(app, rid, "now", "high")
        assert app.stack.database_url
        with Session(engine_for(app.stack.database_url)) as s:
            message = s.get(Message, message_id)
            deliveries = (
                s.execute(select(Delivery).where(col(Delivery.message_id) == message_id))
                .scalars()
                .all()
            )
        assert message is not None and (message.state, message.total) == ("dispatched", 1)
        assert [d.registration_id for d in deliveries] == [rid]
    finally:
        app.stack.apns.configure(latency_ms=0)
    st = app.wait(message_id)
    assert st.by_status == {"SENT": 1}


def test_a_device_that_is_not_registered_fails_the_push_at_once_with_code_2(
    app: AppHandle,
) -> None:
    message_id = _push(app, str(uuid.uuid4()), "nobody", "high")
    st = app.client.message(message_id)  # final when accepted: nothing was queued
    assert (st.state, st.code) == ("failed", 2)


# --- a worker killed during a batch ----------------------------------------------------------

WINDOW = 10  # PUSHLINE_SEND_CONCURRENCY: what a killed process may have sent unrecorded
PROCESSES = 2


@pytest.fixture
def killable_stack(tmp_path: Path) -> Iterator[Stack]:
    env = {
        **TEST_ENV,
        # Its own queues: the session's shared stacks listen on the same Redis db.
        "PUSHLINE_REDIS_KEY_PREFIX": f"{TEST_ENV['PUSHLINE_REDIS_KEY_PREFIX']}txkill:",
        "PUSHLINE_LEASE_S": "4",
        "PUSHLINE_VISIBILITY_TIMEOUT_S": "4",
        "PUSHLINE_SEND_CONCURRENCY": str(WINDOW),
    }
    stack = Stack(
        tmp_path,
        redis_url=fresh_redis(12),
        database_url=fresh_postgres(f"pushline_txkill_{uuid.uuid4().hex[:8]}"),
        worker_concurrency=PROCESSES,
        extra_env=env,
    )
    stack.start()
    yield stack
    stack.stop()


def test_a_worker_killed_during_a_batch_of_single_device_pushes_resends_at_most_its_window(
    killable_stack: Stack,
) -> None:
    stack = killable_stack
    app = AppHandle(stack, stack.add_app("txkill"))
    # Batches take a while: long enough to die inside.
    tokens, ids = _push_each_and_wait(app, 300, latency_ms=400, until_accepted=20)
    stack.kill("worker")  # SIGKILL to the whole worker process group
    assert stack.apns.stats()["accepted_total"] < 300
    stack.apns.configure(latency_ms=0)
    stack.start_worker()
    messages = _wait_all(stack, ids, timeout=120)
    assert {m.state for m in messages.values()} == {"done"}
    accepted = stack.apns.stats()["accepted"]
    counts = [accepted.get(t, 0) for t in tokens]
    assert min(counts) == 1  # nothing lost
    assert sum(c - 1 for c in counts) <= PROCESSES * WINDOW, sum(c - 1 for c in counts)


# --- a PostgreSQL restart during delivery ----------------------------------------------------


class PostgresServer:
    """A PostgreSQL of the test's own (initdb in a temporary directory, another port), so it
    can be restarted without touching the shared one."""

    def __init__(self) -> None:
        self.port = free_port()
        # Not under pytest's tmp_path: the postgres user may not enter root's directories.
        self.workdir = Path(tempfile.mkdtemp(prefix="pushline-pg-"))
        self.data = self.workdir / "pgdata"
        self.bin = Path(sorted(Path("/usr/lib/postgresql").glob("*/bin"))[-1])
        if os.geteuid() == 0:
            shutil.chown(self.workdir, "postgres")

    @property
    def url(self) -> str:
        return f"postgresql://postgres@127.0.0.1:{self.port}/postgres"

    def _as_postgres(self, *args: str) -> None:
        cmd = [str(self.bin / args[0]), *args[1:]]
        if os.geteuid() == 0:  # PostgreSQL refuses to run as root
            cmd = ["runuser", "-u", "postgres", "--", *cmd]
        subprocess.run(cmd, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)

    def init(self) -> None:
        self._as_postgres("initdb", "-D", str(self.data), "-A", "trust", "-U", "postgres")

    def start(self) -> None:
        options = f"-p {self.port} -c listen_addresses=127.0.0.1 -k /tmp"
        self._as_postgres("pg_ctl", "-D", str(self.data), "-w", "-o", options, "start")

    def stop(self, mode: str = "fast") -> None:
        self._as_postgres("pg_ctl", "-D", str(self.data), "-w", "-m", mode, "stop")


@pytest.fixture
def own_postgres() -> Iterator[PostgresServer]:
    server = PostgresServer()
    server.init()
    server.start()
    yield server
    with contextlib.suppress(subprocess.CalledProcessError):
        server.stop("immediate")
    shutil.rmtree(server.workdir, ignore_errors=True)


def test_a_postgresql_restart_during_delivery_loses_nothing(
    tmp_path: Path, own_postgres: PostgresServer
) -> None:
    env = {
        **TEST_ENV,
        "PUSHLINE_REDIS_KEY_PREFIX": f"{TEST_ENV['PUSHLINE_REDIS_KEY_PREFIX']}pgrestart:",
        "PUSHLINE_LEASE_S": "4",
        "PUSHLINE_VISIBILITY_TIMEOUT_S": "4",
    }
    stack = Stack(
        tmp_path / "stack",
        redis_url=fresh_redis(11),
        database_url=own_postgres.url,
        worker_concurrency=PROCESSES,
        extra_env=env,
    )
    stack.start()
    try:
        app = AppHandle(stack, stack.add_app("pgrestart"))
        tokens, ids = _push_each_and_wait(app, 200, latency_ms=20, until_accepted=20)
        own_postgres.stop("immediate")  # a crash, not a clean shutdown
        time.sleep(1)
        own_postgres.start()
        stack.apns.configure(latency_ms=0)
        messages = _wait_all(stack, ids, timeout=180)
        assert {m.state for m in messages.values()} == {"done"}
        accepted = stack.apns.stats()["accepted"]
        assert min(accepted.get(t, 0) for t in tokens) == 1  # every device got its push
    finally:
        stack.stop()


def _one_device_app(engine: Engine, name: str) -> tuple[str, dict[str, Any]]:
    """A new app with one iOS device; (its id, a push body for that device)."""
    tenant = create_tenant(engine, name)
    with Session(engine) as s:
        s.add(Registration(app_id=tenant.id, provider="apns", platform="ios", token="ab" * 32))
        s.commit()
        rid = s.execute(select(col(Registration.id))).scalar_one()
    target = {"type": "device", "registration_id": rid}
    return tenant.id, {"target": target, "payload": {"alert": "x"}}


def test_a_single_device_push_after_the_databases_connections_were_lost_is_accepted() -> None:
    """The dispatcher's pool hands connections over without a ping; a batch whose
    connection turns out lost resolves again on a new one instead of failing with 503."""
    url = fresh_postgres(f"pushline_lost_{uuid.uuid4().hex[:8]}")
    settings = Settings(
        redis_url=fresh_redis(11),
        database_url=url,
        redis_key_prefix=f"{TEST_ENV['PUSHLINE_REDIS_KEY_PREFIX']}lost:",
    )
    upgrade(url)
    engine = engine_for(url)
    try:
        app_id, body = _one_device_app(engine, "tx-lost-connection")
        first = accept_push(app_id, body, settings=settings, engine=engine)
        name = url.rsplit("/", 1)[1]
        with psycopg.connect(f"{POSTGRES}/postgres", autocommit=True) as admin:
            killed = admin.execute(
                "SELECT count(pg_terminate_backend(pid)) FROM pg_stat_activity WHERE datname = %s",
                (name,),
            ).fetchone()
        assert killed is not None and killed[0] >= 1  # the dispatcher's connection among them
        second = accept_push(app_id, body, settings=settings, engine=engine)
        assert (first.state, second.state) == ("dispatched", "dispatched")
        with Session(engine) as s:
            delivered = s.execute(select(col(Delivery.message_id))).scalars().all()
        assert sorted(delivered) == sorted([first.message_id, second.message_id])
    finally:
        engine.dispose()
        drop_postgres(url)


def test_a_batch_whose_targets_cannot_be_resolved_gives_its_connection_back() -> None:
    """Whatever fails while a batch resolves, its connection returns to the pool: the
    dispatcher runs for the life of the process and would run out of them."""
    from producer.dispatch import Dispatcher, Handoff
    from schemas.db import direct

    url = fresh_postgres(f"pushline_giveback_{uuid.uuid4().hex[:8]}")
    upgrade(url)
    engine = engine_for(url)
    try:
        writer = Dispatcher.__new__(Dispatcher)  # its resolving only: no thread, no broker
        writer.engine, writer.settings = engine, Settings(database_url=url)
        unreadable = Handoff({"app_id": "x", "target": {"type": "nonsense"}})
        failures = []  # kept, as the requests' futures keep them (tracebacks and all)
        for _ in range(3):
            with pytest.raises(ValueError, match="nonsense") as failed:
                writer._resolved([unreadable])
            failures.append(failed.value)
        assert direct(engine).pool.checkedout() == 0  # type: ignore[attr-defined]
    finally:
        engine.dispose()
        drop_postgres(url)


def test_a_batch_is_complete_when_every_known_connection_has_a_push_waiting() -> None:
    from producer.dispatch import everyone_waits

    assert everyone_waits(3, 3) and everyone_waits(4, 3)  # (a connection closed meanwhile)
    assert not everyone_waits(2, 3)
    assert not everyone_waits(5, 0)  # no HTTP server counting: the linger decides


def test_a_batch_closes_once_every_connection_has_a_push_waiting_and_not_before(
    tmp_path: Path,
) -> None:
    """The linger (30 s here) is cut short when no connection to the API could add a
    push: a caller that waits for each answer is answered at once, and while another
    connection stays idle the batch waits for it (producer.dispatch.Callers)."""
    from producer.apps import create_key

    linger = {"PUSHLINE_PUBLISH_LINGER_MS": "30000", "PUSHLINE_PUBLISH_LINGER_MAX_MS": "30000"}
    stack = Stack(tmp_path / "stack", redis_url=fresh_redis(12), extra_env={**TEST_ENV, **linger})
    stack.start(worker=False, scheduler=False)
    try:
        assert stack.database_url
        engine = engine_for(stack.database_url)
        app_id, body = _one_device_app(engine, "tx-every-connection")
        key, _ = create_key(engine, app_id, ["push_single"])
        headers = {"X-API-Key": key}
        with httpx.Client(base_url=stack.api_url, headers=headers, timeout=10) as caller:
            states = [caller.post("/v1/messages", json=body).json()["state"] for _ in range(3)]
            assert states == ["dispatched"] * 3  # each within 10 s, not after the 30 s linger
            with (
                httpx.Client(base_url=stack.api_url, headers=headers, timeout=10) as other,
                ThreadPoolExecutor(max_workers=1) as pool,
            ):
                assert other.get("/v1/health").status_code == 200  # open, and idle now
                first = pool.submit(caller.post, "/v1/messages", json=body)
                time.sleep(2)
                assert not first.done()  # `other` could still send: the batch lingers
                second = other.post("/v1/messages", json=body)
                assert (first.result().status_code, second.status_code) == (202, 202)
        with Session(engine) as s:
            assert s.execute(select(func.count()).select_from(Delivery)).scalar_one() == 5
    finally:
        stack.stop()


def test_a_single_device_push_the_broker_refuses_is_unavailable_and_leaves_nothing(
    tmp_path: Path,
) -> None:
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0",  # nothing listens on port 1
        database_url=f"sqlite:///{tmp_path / 'p.db'}",
    )
    upgrade(settings.database_url)
    engine = engine_for(settings.database_url)
    app_id, body = _one_device_app(engine, "tx-broker-down")
    with pytest.raises(Unavailable, match="result code 3"):
        accept_push(app_id, body, settings=settings, engine=engine)
    with Session(engine) as s:
        assert s.execute(select(func.count()).select_from(Message)).scalar_one() == 0
        assert s.execute(select(func.count()).select_from(Delivery)).scalar_one() == 0


def test_a_single_device_push_over_http_the_broker_refuses_is_503_in_the_native_shape(
    tmp_path: Path,
) -> None:
    from fastapi.testclient import TestClient

    from producer.api import create_app as create_api
    from producer.apps import create_key

    settings = Settings(
        redis_url="redis://127.0.0.1:1/0", database_url=f"sqlite:///{tmp_path / 'p.db'}"
    )
    api = create_api(settings)
    engine = engine_for(settings.database_url)
    tenant = create_tenant(engine, "tx-http-broker-down")
    key, _ = create_key(engine, tenant.id, ["push_single"])
    with Session(engine) as s:
        s.add(Registration(app_id=tenant.id, provider="apns", platform="ios", token="cd" * 32))
        s.commit()
        rid = s.execute(select(col(Registration.id))).scalar_one()
    client = TestClient(api)
    body = {"target": {"type": "device", "registration_id": rid}, "payload": {"alert": "x"}}
    headers = {"X-API-Key": key}
    assert client.get("/v1/messages/nothing", headers=headers).status_code == 404  # key cached
    r = client.post("/v1/messages", headers=headers, json=body)
    assert r.status_code == 503
    assert r.json()["error"] == "unavailable" and "result code 3" in r.json()["message"]
    with Session(engine) as s:
        assert s.execute(select(func.count()).select_from(Message)).scalar_one() == 0
    bad = client.post("/v1/messages", headers=headers, json={**body, "payload": {"badge": -1}})
    assert bad.status_code == 400 and bad.json()["details"][0]["field"]  # the app's own shape


def test_a_task_message_is_written_as_celerys_own_publisher_writes_it() -> None:
    """The lean publisher's envelope has every field `send_task` writes, with the same
    values where they are not per message (ids, origin, reply_to)."""
    import base64
    import json

    import redis

    from producer.enqueue import _client, enqueue_deliveries
    from schemas.queueing import DELIVER_TASK, PRIORITY_QUEUE

    url = fresh_redis(12)
    prefix = f"lean-{uuid.uuid4().hex[:8]}:"
    settings = Settings(redis_url=url, redis_key_prefix=prefix)
    client = redis.Redis.from_url(url)
    queue_key = f"{prefix}{PRIORITY_QUEUE}"
    _client(settings).send_task(DELIVER_TASK, args=[["d1", "d2"], "priority"], queue=PRIORITY_QUEUE)
    enqueue_deliveries(settings, ["d1", "d2"], "priority")
    lean, celery = (json.loads(raw) for raw in client.lrange(queue_key, 0, -1))
    client.delete(*client.keys(f"{prefix}*"))
    per_message = {"id", "root_id", "origin", "correlation_id", "delivery_tag", "reply_to"}
    for part in ("headers", "properties"):
        assert set(lean[part]) == set(celery[part]) - {"reply_to"}
        for name, value in celery[part].items():
            assert name in per_message or lean[part][name] == value, name
    assert base64.b64decode(lean["body"]) == base64.b64decode(celery["body"])
    assert {k: v for k, v in lean.items() if k not in ("headers", "properties", "body")} == {
        k: v for k, v in celery.items() if k not in ("headers", "properties", "body")
    }


def test_the_dispatcher_lingers_longer_while_deliver_tasks_wait_and_less_once_they_are_taken() -> (
    None
):
    """The publisher says how many tasks wait before the one it wrote (no worker consumes
    this queue), and the linger follows: doubling up to the ceiling while two or more
    wait, halving back to the floor once the queue is empty."""
    import redis

    from producer.dispatch import next_linger
    from producer.enqueue import enqueue_deliveries
    from schemas.queueing import PRIORITY_QUEUE

    url = fresh_redis(12)
    prefix = f"linger-{uuid.uuid4().hex[:8]}:"
    settings = Settings(redis_url=url, redis_key_prefix=prefix)
    waiting = [enqueue_deliveries(settings, [f"d{i}"], "priority") for i in range(4)]
    assert waiting == [0, 1, 2, 3]

    floor, ceiling = 0.005, 0.030
    linger = floor
    for w in waiting:
        linger = next_linger(linger, w, floor, ceiling)
    assert linger == pytest.approx(0.020)  # held at one waiting, doubled at two and three
    assert next_linger(next_linger(linger, 9, floor, ceiling), 9, floor, ceiling) == ceiling

    redis.Redis.from_url(url).delete(f"{prefix}{PRIORITY_QUEUE}")  # a worker took them all
    drained = enqueue_deliveries(settings, ["d9"], "priority")
    assert drained == 0
    for _ in range(5):
        linger = next_linger(linger, drained, floor, ceiling)
    assert linger == floor
    redis.Redis.from_url(url).delete(f"{prefix}{PRIORITY_QUEUE}")
