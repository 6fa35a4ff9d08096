"""Idempotency keys, and the priority lane that a campaign cannot starve."""

from __future__ import annotations

import time
import uuid
from datetime import timedelta
from pathlib import Path

import httpx
import pytest
import time_machine
from sqlmodel import Session

from producer.accept import accept_push
from producer.errors import Conflict
from producer.stack import Stack
from schemas.db import engine_for
from schemas.queueing import lane_for
from schemas.settings import Settings
from schemas.tables import Message, utcnow
from tests.conftest import TEST_ENV, AppHandle, fresh_postgres, fresh_redis, register_bulk

BODY = {"target": {"type": "users", "usernames": ["ida"]}, "payload": {"alert": "once"}}


def post(app: AppHandle, body: dict[str, object], key: str | None = None) -> httpx.Response:
    headers = {"X-API-Key": app.creds.api_key}
    if key:
        headers["Idempotency-Key"] = key
    return httpx.post(f"{app.stack.api_url}/v1/messages", headers=headers, json=body)


def test_the_same_key_returns_the_first_message_and_sends_nothing_again(app: AppHandle) -> None:
    token = app.ios("ida")
    key = str(uuid.uuid4())
    first = post(app, BODY, key).json()
    app.wait(first["id"])
    again = post(app, BODY, key)
    assert again.status_code == 202
    assert (again.json()["id"], again.json()["replayed"]) == (first["id"], True)
    as_field = post(app, {**BODY, "idempotency_key": key}).json()
    assert as_field["id"] == first["id"]
    time.sleep(0.5)
    assert app.stack.apns.stats()["accepted"][token] == 1


def test_the_same_key_with_another_body_is_409(app: AppHandle) -> None:
    app.ios("ida")
    key = str(uuid.uuid4())
    assert post(app, BODY, key).status_code == 202
    other = post(app, {**BODY, "payload": {"alert": "twice?"}}, key)
    assert other.status_code == 409
    assert other.json()["details"][0]["field"] == "idempotency_key"


def test_keys_are_per_app(stack: Stack) -> None:
    a = AppHandle(stack, stack.add_app(f"ka-{uuid.uuid4().hex[:8]}"))
    b = AppHandle(stack, stack.add_app(f"kb-{uuid.uuid4().hex[:8]}"))
    a.ios("ida")
    b.ios("ida")
    assert post(a, BODY, "k1").json()["id"] != post(b, BODY, "k1").json()["id"]


def test_a_key_is_free_again_after_24_hours(app: AppHandle) -> None:
    assert app.stack.database_url and app.stack.redis_url
    settings = Settings(
        database_url=app.stack.database_url,
        redis_url=app.stack.redis_url,
        redis_key_prefix=TEST_ENV["PUSHLINE_REDIS_KEY_PREFIX"],
    )
    app.ios("ida")
    key = str(uuid.uuid4())
    first = accept_push(app.creds.app_id, BODY, settings=settings, idempotency_key=key)
    with time_machine.travel(utcnow() + timedelta(hours=23)):
        assert (
            accept_push(app.creds.app_id, BODY, settings=settings, idempotency_key=key).message_id
            == first.message_id
        )
        with pytest.raises(Conflict):
            accept_push(
                app.creds.app_id,
                {**BODY, "payload": {"alert": "x"}},
                settings=settings,
                idempotency_key=key,
            )
    with time_machine.travel(utcnow() + timedelta(hours=25)):
        later = accept_push(app.creds.app_id, BODY, settings=settings, idempotency_key=key)
    assert later.message_id != first.message_id and not later.replayed


@pytest.mark.parametrize(
    ("target", "priority", "lane"),
    [
        ({"type": "device", "registration_id": "r"}, "high", "priority"),
        ({"type": "users", "usernames": ["a"]}, "high", "priority"),
        ({"type": "users", "global_user_ids": ["g"]}, "high", "priority"),
        ({"type": "users", "usernames": ["a", "b"]}, "high", "bulk"),
        ({"type": "users", "usernames": ["a"]}, "normal", "bulk"),
        ({"type": "application"}, "high", "bulk"),
    ],
)
def test_one_device_or_one_user_at_high_priority_takes_the_priority_lane(
    target: dict[str, object], priority: str, lane: str
) -> None:
    assert lane_for(target, priority) == lane


def test_a_priority_worker_delivers_single_pushes_while_campaigns_wait(tmp_path: Path) -> None:
    stack = Stack(
        tmp_path,
        redis_url=fresh_redis(10),
        database_url=fresh_postgres(f"pushline_lane_{uuid.uuid4().hex[:8]}"),
        extra_env=TEST_ENV,
        worker_concurrency=1,
    )
    with stack:
        stack.start(worker=False, scheduler=False)
        stack.start_worker("priority-worker", queues="pushline.priority")
        app = AppHandle(stack, stack.add_app("lanes"))
        register_bulk(stack, app.creds.app_id, 50)
        token = app.ios("vip")
        campaign = app.client.push(
            {"target": {"type": "application"}, "payload": {"alert": "sale"}}
        )
        urgent = app.client.push(
            {
                "target": {"type": "users", "usernames": ["vip"]},
                "payload": {"alert": "your code is 123456"},
            }
        )
        assert app.wait(urgent.id, timeout=30).by_code == {"0": 1}
        assert stack.apns.stats()["accepted"] == {token: 1}
        assert app.client.message(campaign.id).state == "accepted"  # no bulk worker yet
        stack.start_worker("bulk-worker", queues="pushline")
        assert app.wait(campaign.id, timeout=60).by_status == {"SENT": 51}
        with Session(engine_for(stack.database_url or "")) as s:
            lanes = {s.get(Message, m.id).lane for m in (campaign, urgent)}  # type: ignore[union-attr]
        assert lanes == {"bulk", "priority"}
