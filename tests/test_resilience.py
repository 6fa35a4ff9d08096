"""Nothing accepted is lost: a worker killed mid-chunk, a broker or store that is down."""

from __future__ import annotations

import time
import uuid
from pathlib import Path

import pytest
from sqlalchemy import func, select
from sqlmodel import Session

from producer import Unavailable, accept_push
from producer.api import create_app
from producer.stack import Stack
from schemas.db import engine_for
from schemas.settings import Settings
from schemas.tables import Delivery, Message, utcnow
from tests.conftest import TEST_ENV, AppHandle, fresh_postgres, fresh_redis, log_tail, register_bulk

CHUNK = 50
WINDOW = 5  # PUSHLINE_SEND_CONCURRENCY: sent but not yet recorded, at most


@pytest.fixture
def fragile_stack(tmp_path: Path) -> Stack:
    # Short leases and visibility so a killed worker's chunk comes back within seconds.
    env = {
        **TEST_ENV,
        "PUSHLINE_LEASE_S": "4",
        "PUSHLINE_VISIBILITY_TIMEOUT_S": "4",
        "PUSHLINE_CHUNK_SIZE": str(CHUNK),
        "PUSHLINE_SEND_CONCURRENCY": str(WINDOW),
    }
    stack = Stack(
        tmp_path,
        redis_url=fresh_redis(13),
        database_url=fresh_postgres(f"pushline_kill_{uuid.uuid4().hex[:8]}"),
        worker_concurrency=1,
        extra_env=env,
    )
    stack.start()
    yield stack  # type: ignore[misc]
    stack.stop()


def test_a_worker_killed_mid_chunk_loses_nothing_and_resends_at_most_its_send_window(
    fragile_stack: Stack,
) -> None:
    stack = fragile_stack
    app = AppHandle(stack, stack.add_app("kill"))
    tokens = register_bulk(stack, app.creds.app_id, 300)
    stack.apns.configure(latency_ms=100)  # a chunk takes ~1 s: long enough to die inside
    msg = app.client.push({"target": {"type": "application"}, "payload": {"alert": "x"}})
    deadline = time.monotonic() + 30
    while stack.apns.stats()["requests_total"] < 10:
        assert time.monotonic() < deadline, log_tail(stack, "worker")
        time.sleep(0.02)
    stack.kill("worker")  # SIGKILL to the whole worker process group
    in_flight_at_kill = stack.apns.stats()["requests_total"]
    assert in_flight_at_kill < 300
    stack.apns.configure(latency_ms=0)
    stack.start_worker()
    st = app.wait(msg.id, timeout=90)
    assert (st.state, st.by_status) == ("done", {"SENT": 300})
    stats = stack.apns.stats()
    counts = [stats["accepted"].get(t, 0) for t in tokens]
    assert min(counts) == 1  # every device got it
    twice = sum(1 for c in counts if c > 1)
    # Outcomes are recorded as they arrive: only what was on the wire is sent again.
    assert max(counts) <= 2 and twice <= WINDOW, (twice, max(counts))


def test_broker_down_is_503_and_nothing_is_persisted(tmp_path: Path) -> None:
    settings = Settings(
        redis_url="redis://127.0.0.1:1/0",  # nothing listens on port 1
        database_url=f"sqlite:///{tmp_path / 'p.db'}",
    )
    from fastapi.testclient import TestClient

    from producer.apps import create_app as create_tenant
    from producer.apps import create_key

    api = create_app(settings)
    engine = engine_for(settings.database_url)
    tenant = create_tenant(engine, "broker-down")
    key, _ = create_key(engine, tenant.id, ["push_all"])
    r = TestClient(api).post(
        "/v1/messages",
        headers={"X-API-Key": key},
        json={"target": {"type": "application"}, "payload": {"alert": "x"}},
    )
    assert r.status_code == 503
    assert "queue is unavailable" in r.json()["message"]
    with Session(engine) as s:
        assert s.execute(select(func.count()).select_from(Message)).scalar_one() == 0


def test_store_down_is_503_with_a_clear_message(tmp_path: Path) -> None:
    from fastapi.testclient import TestClient

    good = Settings(redis_url=fresh_redis(14), database_url=f"sqlite:///{tmp_path / 'p.db'}")
    api = create_app(good)
    from producer.apps import create_app as create_tenant
    from producer.apps import create_key

    engine = engine_for(good.database_url)
    key, _ = create_key(engine, create_tenant(engine, "store-down").id, ["push_all"])
    # The API's store disappears: point its engine at a PostgreSQL port where nothing listens.
    api.state.keys.engine = engine_for("postgresql://postgres@127.0.0.1:1/none")
    api.state.keys._cache.clear()
    r = TestClient(api).post(
        "/v1/messages",
        headers={"X-API-Key": key},
        json={"target": {"type": "application"}, "payload": {"alert": "x"}},
    )
    assert r.status_code == 503
    assert r.json()["error"] == "unavailable"


def test_a_python_service_enqueues_with_the_same_function_as_the_api(stack: Stack) -> None:
    app = AppHandle(stack, stack.add_app(f"py-{uuid.uuid4().hex[:8]}"))
    token = app.ios("sam")
    assert stack.redis_url and stack.database_url
    settings = Settings(
        redis_url=stack.redis_url,
        database_url=stack.database_url,
        redis_key_prefix=TEST_ENV["PUSHLINE_REDIS_KEY_PREFIX"],
    )
    accepted = accept_push(
        app.creds.app_id,
        {
            "target": {"type": "users", "usernames": ["sam"]},
            "payload": {"alert": {"title": "from python"}},
        },
        settings=settings,
    )
    st = app.wait(accepted.message_id)
    assert st.by_code == {"0": 1}
    assert stack.apns.requests(token)[0]["body"]["aps"]["alert"] == {"title": "from python"}
    with pytest.raises(Exception, match="payload"):
        accept_push(app.creds.app_id, {"target": {"type": "application"}}, settings=settings)


def test_accept_push_raises_unavailable_when_the_broker_is_down(tmp_path: Path) -> None:
    from schemas.db import upgrade

    settings = Settings(
        redis_url="redis://127.0.0.1:1/0", database_url=f"sqlite:///{tmp_path / 'p.db'}"
    )
    upgrade(settings.database_url)
    from producer.apps import create_app as create_tenant

    tenant = create_tenant(engine_for(settings.database_url), "down")
    with pytest.raises(Unavailable):
        accept_push(
            tenant.id,
            {"target": {"type": "application"}, "payload": {"alert": "x"}},
            settings=settings,
        )
    with Session(engine_for(settings.database_url)) as s:
        assert s.execute(select(func.count()).select_from(Message)).scalar_one() == 0
        assert s.execute(select(func.count()).select_from(Delivery)).scalar_one() == 0
    assert utcnow()
