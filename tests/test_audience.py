"""POST /v1/audience: reach of any target, counted in SQL, nothing sent."""

from __future__ import annotations

import httpx
from sqlalchemy import func, select, update
from sqlmodel import Session, col

from schemas.db import engine_for
from schemas.tables import Message, Registration
from tests.conftest import AppHandle


def _deactivate(app: AppHandle, token: str) -> None:
    assert app.stack.database_url
    with Session(engine_for(app.stack.database_url)) as s:
        s.execute(
            update(Registration)
            .where(col(Registration.token) == token)
            .values(active=False, deactivated_code=7)
        )
        s.commit()


def _messages_of(app: AppHandle) -> int:
    assert app.stack.database_url
    with Session(engine_for(app.stack.database_url)) as s:
        q = select(func.count()).where(col(Message.app_id) == app.creds.app_id)
        return int(s.execute(q).scalar_one())


def test_reach_is_counted_by_provider_and_platform_for_active_devices_only(
    any_app: AppHandle,
) -> None:
    any_app.ios("ann", topics=["news"])  # type: ignore[arg-type]
    any_app.ios("bob", platform="ipados")
    any_app.android("cat", topics=["news", "sport"])  # type: ignore[arg-type]
    gone = any_app.android("dan", topics=["news"])  # type: ignore[arg-type]
    _deactivate(any_app, gone)
    before = (
        any_app.stack.apns.stats()["requests_total"],
        any_app.stack.fcm.stats()["requests_total"],
    )

    everyone = any_app.client.audience({"type": "application"})
    assert everyone.total == 3
    assert everyone.by_provider == {"apns": 2, "fcm": 1}
    assert everyone.by_platform == {"ios": 1, "ipados": 1, "android": 1}
    assert [(g.provider, g.platform, g.devices) for g in everyone.groups] == [
        ("apns", "ios", 1),
        ("apns", "ipados", 1),
        ("fcm", "android", 1),
    ]
    # A device on two listed topics is one device, as the fan-out counts it.
    topic = any_app.client.audience({"type": "topic", "topics": ["news", "sport"]})
    assert (topic.total, topic.by_provider) == (2, {"apns": 1, "fcm": 1})
    android = any_app.client.audience(
        {
            "type": "destinations",
            "destinations": [{"type": "MULTIPLE", "filter": {"$and": [{"platform": "Android"}]}}],
        }
    )
    assert (android.total, android.by_platform) == (1, {"android": 1})
    nobody = any_app.client.audience({"type": "users", "usernames": ["zed"]})
    assert (nobody.total, nobody.groups) == (0, [])

    after = (
        any_app.stack.apns.stats()["requests_total"],
        any_app.stack.fcm.stats()["requests_total"],
    )
    assert after == before
    assert _messages_of(any_app) == 0


def test_an_invalid_target_is_a_400_naming_the_field_and_the_rule(app: AppHandle) -> None:
    url = f"{app.stack.api_url}/v1/audience"
    headers = {"X-API-Key": app.creds.api_key}
    r = httpx.post(url, headers=headers, json={"target": {"type": "topic", "topics": []}})
    assert r.status_code == 400
    body = r.json()
    assert body["error"] == "invalid_request"
    assert body["details"][0]["field"] == "target.topic"
    # Word for word what the push route says about the same target.
    push = {"target": {"type": "topic", "topics": []}, "payload": {"alert": "x"}}
    pushed = httpx.post(f"{app.stack.api_url}/v1/messages", headers=headers, json=push).json()
    assert body["details"][0]["rule"] == pushed["details"][0]["rule"]
    r = httpx.post(url, headers=headers, json={"target": {"type": "galaxy"}})
    assert r.status_code == 400 and "target" in r.json()["details"][0]["field"]
    r = httpx.post(url, headers=headers, json={"target": {"type": "application"}, "x": 1})
    assert r.status_code == 400 and r.json()["details"][0]["field"] == "x"
    r = httpx.post(url, headers={**headers, "Content-Type": "application/json"}, content=b"{nope")
    assert r.status_code == 400


def test_the_same_role_as_pushing_to_that_target_is_required(app: AppHandle) -> None:
    creds = app.stack.add_app(f"{app.creds.app_id[-12:]}-single", roles=("push_single",))
    url = f"{app.stack.api_url}/v1/audience"
    headers = {"X-API-Key": creds.api_key}
    r = httpx.post(url, headers=headers, json={"target": {"type": "application"}})
    assert r.status_code == 403
    device = {"type": "device", "registration_id": "nope"}
    r = httpx.post(url, headers=headers, json={"target": device})
    assert (r.status_code, r.json()["total"]) == (200, 0)
