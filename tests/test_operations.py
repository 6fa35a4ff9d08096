"""What operators rely on: every lane drains, readiness, metrics, JSON logs with request ids,
one id's story, retention and safe migrations."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import redis
import yaml
from sqlalchemy import func, select, update
from sqlmodel import Session, col

from bench.infra import RedisServer
from producer.stack import Stack, free_port
from schemas.db import current_revision, engine_for, migration_history
from schemas.liveness import expected_queues
from schemas.settings import Settings
from schemas.tables import Delivery, Message, utcnow
from tests.conftest import TEST_ENV, AppHandle, fresh_postgres, log_tail

ROOT = Path(__file__).resolve().parent.parent
EVERY_QUEUE = set(expected_queues(Settings(priority_lane=True)))
PUSHLINE = str(Path(sys.executable).parent / "pushline")


def queues_in(command: str) -> set[str]:
    """The queues a `pushline worker … -Q a,b` command line consumes."""
    found = re.search(r"-Q\s+([\w.,]+)", command)
    return set(found.group(1).split(",")) if found and "worker" in command else set()


def test_every_shipped_deployment_consumes_every_queue() -> None:
    procfile = (ROOT / "Procfile").read_text().splitlines()
    compose = yaml.safe_load((ROOT / "deploy/compose.yaml").read_text())["services"]
    units = [p.read_text() for p in (ROOT / "deploy/systemd").glob("*.service")]
    deployments = {
        "Procfile": [line.split(":", 1)[1] for line in procfile if ":" in line],
        "compose": [" ".join(s.get("command", [])) for s in compose.values()],
        "systemd": [
            line.removeprefix("ExecStart=")
            for u in units
            for line in u.splitlines()
            if line.startswith("ExecStart=")
        ],
    }
    for name, commands in deployments.items():
        consumed = set().union(*(queues_in(c) for c in commands))
        assert consumed >= EVERY_QUEUE, f"{name} leaves {EVERY_QUEUE - consumed} unread"
        assert any("scheduler" in c for c in commands), f"{name} runs no scheduler"


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[RedisServer]:
    server = RedisServer(tmp_path)
    server.start()
    yield server
    server.stop()


@pytest.fixture
def bare_stack(tmp_path: Path, own_redis: RedisServer) -> Iterator[Stack]:
    """API and simulators only: each test starts the workers it needs."""
    env = {**TEST_ENV, "PUSHLINE_SWEEP_INTERVAL_S": "1", "PUSHLINE_SWEEP_GRACE_S": "1"}
    stack = Stack(
        tmp_path / "stack",
        redis_url=own_redis.url,
        database_url=fresh_postgres(f"pushline_ops_{uuid.uuid4().hex[:8]}"),
        extra_env=env,
    )
    stack.start(worker=False, scheduler=False)
    yield stack
    stack.stop()


def ready(stack: Stack) -> tuple[int, dict[str, str]]:
    r = httpx.get(f"{stack.api_url}/v1/ready", timeout=10)
    return r.status_code, r.json()["checks"]


def wait_for(predicate: object, timeout: float = 30.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():  # type: ignore[operator]
        assert time.monotonic() < deadline, "condition not met in time"
        time.sleep(0.2)


def test_readiness_and_the_sweep_name_a_lane_that_nobody_consumes(
    bare_stack: Stack, own_redis: RedisServer
) -> None:
    status, checks = ready(bare_stack)
    assert status == 503
    assert "pushline worker -Q pushline.priority" in checks["queue pushline.priority"]
    assert "pushline scheduler" in checks["scheduler"]
    bare_stack.start_worker(queues="pushline,pushline.webhooks")
    bare_stack.start_scheduler()
    # Both announce themselves once started; the scheduler may take longer than the worker.
    wait_for(lambda: _all_ok(ready(bare_stack)[1], "queue pushline", "scheduler"))
    status, checks = ready(bare_stack)
    assert (status, checks["database"], checks["redis"], checks["scheduler"]) == (
        503,
        "ok",
        "ok",
        "ok",
    )
    assert checks["queue pushline.priority"].startswith("no live consumer")

    app = AppHandle(bare_stack, bare_stack.add_app("ops-lanes"))
    token = app.ios(username="ann")
    msg = app.client.push(
        {
            "target": {"type": "users", "usernames": ["ann"]},
            "payload": {"alert": "hi", "priority": "high"},
        }
    )
    wait_for(lambda: "no live worker consumes" in log_tail(bare_stack, "scheduler", 20000))
    time.sleep(3)  # several sweeps: none may add to the unread queue
    r = redis.Redis.from_url(own_redis.url)
    assert r.llen(TEST_ENV["PUSHLINE_REDIS_KEY_PREFIX"] + "pushline.priority") == 1
    assert "pushline.priority" in log_tail(bare_stack, "scheduler", 20000)

    bare_stack.start_worker("priority", queues="pushline.priority")
    assert app.wait(msg.id).by_status == {"SENT": 1}
    assert bare_stack.apns.stats()["accepted"][token] == 1
    wait_for(lambda: ready(bare_stack)[0] == 200)

    own_redis.stop()
    status, checks = ready(bare_stack)
    assert status == 503 and checks["redis"].startswith("unreachable")
    assert httpx.get(f"{bare_stack.api_url}/v1/health").status_code == 200  # liveness


def _all_ok(checks: dict[str, str], *names: str) -> bool:
    return all(checks.get(name) == "ok" for name in names)


def scrape(url: str) -> dict[str, float]:
    """`name{labels}` -> value of a Prometheus text exposition."""
    out = {}
    for line in httpx.get(url, timeout=10).text.splitlines():
        if line and not line.startswith("#"):
            key, _, value = line.rpartition(" ")
            out[key] = float(value)
    return out


def test_metrics_count_accepted_pushes_and_deliveries_by_provider_status_and_code(
    bare_stack: Stack,
) -> None:
    port = free_port()
    bare_stack.start_worker(env={"PUSHLINE_METRICS_PORT": str(port)})
    bare_stack.start_scheduler()
    app = AppHandle(bare_stack, bare_stack.add_app("ops-metrics"))
    good, gone = app.ios(username="bo"), app.ios(username="bo")
    bare_stack.apns.script(token=gone, then="Unregistered")
    st = app.push_users("bo")
    assert st.by_code == {"0": 1, "7": 1}

    sent = 'pushline_deliveries_total{code="0",provider="apns",status="SENT"}'
    failed = 'pushline_deliveries_total{code="7",provider="apns",status="ERROR"}'
    # The worker counts outcomes just after it records them: the rows can be read first.
    deadline = time.monotonic() + 10
    while True:
        worker = scrape(f"http://127.0.0.1:{port}/metrics")
        if (sent in worker and failed in worker) or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    assert (worker.get(sent), worker.get(failed)) == (1.0, 1.0)
    assert worker['pushline_provider_request_duration_seconds_count{provider="apns"}'] == 2.0
    health = httpx.get(f"http://127.0.0.1:{port}/health").json()
    assert health["status"] == "ok" and "pushline.priority" in health["queues"]

    api = scrape(f"{bare_stack.api_url}/metrics")
    labels = f'app="{app.creds.app_id}",lane="priority",target="users"'
    accepted = f"pushline_messages_accepted_total{{{labels}}}"
    assert api[accepted] == 1.0
    assert api['pushline_http_requests_total{method="POST",route="/v1/messages",status="202"}'] >= 1
    assert api['pushline_queue_consumers{queue="pushline.priority"}'] == 1.0
    assert api["pushline_deliveries_queued"] == 0.0
    assert api['pushline_up{part="database"}'] == api['pushline_up{part="redis"}'] == 1.0
    assert not any(good in k or gone in k or app.creds.api_key in k for k in api)


def test_every_log_line_is_json_and_a_push_is_logged_with_its_request_id(
    bare_stack: Stack,
) -> None:
    bare_stack.start_worker()
    bare_stack.start_scheduler()
    app = AppHandle(bare_stack, bare_stack.add_app("ops-logs"))
    app.ios(username="cy")
    r = httpx.post(
        f"{bare_stack.api_url}/v1/messages",
        headers={"X-API-Key": app.creds.api_key, "X-Request-Id": "req-42"},
        json={"target": {"type": "users", "usernames": ["cy"]}, "payload": {"alert": "x"}},
    )
    assert r.status_code == 202 and r.headers["x-request-id"] == "req-42"
    app.wait(r.json()["id"])
    made = httpx.get(f"{bare_stack.api_url}/v1/health").headers["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", made)
    time.sleep(1)
    for name in ("api", "worker", "scheduler"):
        lines = (bare_stack.state_dir / f"{name}.log").read_text().splitlines()
        assert lines, name
        for line in lines:
            assert isinstance(json.loads(line), dict), f"{name}: {line}"
    api_lines = [json.loads(x) for x in (bare_stack.state_dir / "api.log").read_text().splitlines()]
    # The push's one line is its accept line, carrying the access-log fields too.
    accepted = [x for x in api_lines if x["event"] == "push accepted"]
    assert [
        (x["request_id"], x["message"], x["target"], x["status"], x["path"]) for x in accepted
    ] == [("req-42", r.json()["id"], "users", 202, "/v1/messages")]
    assert not any(x["event"] == "request" and x.get("request_id") == "req-42" for x in api_lines)
    assert any(x["event"] == "request" and x.get("request_id") == made for x in api_lines)


def test_a_retried_delivery_keeps_each_attempt_in_order(app: AppHandle) -> None:
    hook = httpx.post(
        f"{app.stack.api_url}/v1/webhooks",
        headers={"X-API-Key": app.creds.api_key, "Content-Type": "application/json"},
        json={"url": "http://127.0.0.1:9/down", "events": ["MessageSent"]},
    )
    assert hook.status_code == 201, hook.text
    token = app.ios(username="di")
    app.stack.apns.script(token=token, responses=["ServiceUnavailable", "TooManyRequests"])
    st = app.push_users("di")
    assert st.by_code == {"0": 1}
    delivery_id = app.client.deliveries(st.id).items[0].id
    d = app.client.delivery(delivery_id)
    assert d.history is not None
    assert [a.code for a in d.history] == [11, 8, 0]
    assert all(a.ms is not None and a.worker for a in d.history)
    assert d.history[0].at <= d.history[1].at <= d.history[2].at

    def trace() -> str:
        return subprocess.run(
            [PUSHLINE, "trace", delivery_id],
            env={**os.environ, "DATABASE_URL": app.stack.database_url or "", "COLUMNS": "200"},
            capture_output=True,
            text=True,
            check=True,
        ).stdout

    wait_for(lambda: "webhook retrying" in trace())  # the MessageSent event's POST failed
    out = trace()
    order = [
        out.index(w)
        for w in ("accepted", "queued", "attempt 1", "attempt 2", "attempt 3", "final SENT")
    ]
    assert order == sorted(order)


def test_pruning_removes_exactly_the_messages_older_than_the_age(app: AppHandle) -> None:
    # Two days old against a 1-day age: the stack's scheduler prunes at 30 days on its own
    # round and so never takes these rows before the command does.
    tokens = [app.ios(username=f"p{i}") for i in range(3)]
    ids = [app.push_users(f"p{i}").id for i in range(3)]
    assert len(tokens) == 3
    engine = engine_for(app.stack.database_url or "")
    with Session(engine) as s:
        s.execute(
            update(Message)
            .where(col(Message.id).in_(ids[:2]))
            .values(created_at=utcnow() - timedelta(days=2))
        )
        s.commit()
    out = subprocess.run(
        [PUSHLINE, "db", "prune", "--older-than", "1d"],
        env={**os.environ, "DATABASE_URL": app.stack.database_url or ""},
        capture_output=True,
        text=True,
        check=True,
    ).stdout
    assert "pruned 2 messages and 2 deliveries" in out
    with Session(engine) as s:
        left = set(s.execute(select(col(Message.id)).where(col(Message.id).in_(ids))).scalars())
        deliveries = s.execute(
            select(func.count()).where(col(Delivery.message_id).in_(ids))
        ).scalar_one()
    assert (left, deliveries) == ({ids[2]}, 1)


def test_three_concurrent_upgrades_of_an_empty_postgres_all_succeed() -> None:
    url = fresh_postgres(f"pushline_mig_{uuid.uuid4().hex[:8]}")
    procs = [
        subprocess.Popen(
            [PUSHLINE, "db", "upgrade"],
            env={**os.environ, "DATABASE_URL": url},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
        )
        for _ in range(3)
    ]
    results = [(p.wait(timeout=120), p.stdout.read() if p.stdout else b"") for p in procs]
    assert [rc for rc, _ in results] == [0, 0, 0], results
    assert current_revision(url) == migration_history()[-1][0]


SUFFIXES = {"counter": ("_total",), "histogram": ("", "_bucket", "_count", "_sum")}


def exported_series(documented: bool = False) -> set[str]:
    """Every series name Pushline exports: the counters and histograms of
    schemas/metrics.py with their suffixes, and the gauges read at scrape time
    (`documented`: the names the README lists, a histogram by its own name)."""
    from prometheus_client.metrics import MetricWrapperBase

    import schemas.metrics as m

    names = set(m.SCRAPED)
    for obj in vars(m).values():
        if isinstance(obj, MetricWrapperBase):
            for family in obj.describe():
                suffixes = SUFFIXES.get(family.type, ("",))
                names |= {family.name + s for s in (suffixes[:1] if documented else suffixes)}
    return names


def test_every_dashboard_query_names_a_series_pushline_exports() -> None:
    dashboard = json.loads((ROOT / "deploy/grafana/pushline.json").read_text())
    exprs = [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    used = {name for e in exprs for name in re.findall(r"\bpushline_[a-z_]+", e)}
    assert len(exprs) >= 15 and used
    assert used - exported_series() == set()
    readme = (ROOT / "README.md").read_text()
    assert [n for n in sorted(exported_series(documented=True)) if f"`{n}`" not in readme] == []
