"""What apps report after a send (statuses never move backwards), and the ways a key
arrives: X-API-Key in any case, Basic alias:key, `Authorization: App`, and the per-key
request quota."""

from __future__ import annotations

import base64
import time
import uuid

import httpx
import pytest

from producer.apps import create_key
from schemas.codes import engagement_moves
from schemas.db import engine_for
from tests.conftest import AppHandle


def _one_delivery(app: AppHandle, token_owner: str = "eve") -> str:
    st = app.push_users(token_owner)
    page = app.client.deliveries(st.id)
    assert len(page.items) == 1
    return page.items[0].id


def _report(
    app: AppHandle, delivery_id: str, status: str, key: str | None = None
) -> httpx.Response:
    return httpx.post(
        f"{app.stack.api_url}/v1/deliveries/{delivery_id}/status",
        json={"status": status},
        headers={"X-API-Key": key or app.creds.api_key},
    )


def test_reported_statuses_move_forward_and_never_back(any_app: AppHandle) -> None:
    any_app.ios("eve")
    delivery_id = _one_delivery(any_app)
    assert any_app.client.delivery(delivery_id).status == "SENT"

    consumed = _report(any_app, delivery_id, "CONSUMED")
    assert consumed.status_code == 200, consumed.text
    assert consumed.json()["status"] == "CONSUMED" and consumed.json()["consumed_at"]

    late = _report(any_app, delivery_id, "RECEIVED")  # arrives after CONSUMED: no step back
    assert late.status_code == 200
    assert late.json()["status"] == "CONSUMED" and late.json()["received_at"]

    assert _report(any_app, delivery_id, "confirmed").json()["status"] == "CONFIRMED"
    again = _report(any_app, delivery_id, "CONSUMED").json()
    assert again["status"] == "CONFIRMED"
    assert again["consumed_at"] == consumed.json()["consumed_at"]  # the first time is kept
    assert any_app.client.delivery(delivery_id).status == "CONFIRMED"


def test_an_unknown_status_is_a_400_naming_status(app: AppHandle) -> None:
    app.ios("eve")
    r = _report(app, _one_delivery(app), "SEEN")
    assert r.status_code == 400
    assert r.json()["details"][0]["field"] == "status"


def test_a_failed_delivery_cannot_be_reported_received(app: AppHandle) -> None:
    token = app.ios("eve")
    app.stack.apns.script(token=token, then="BadDeviceToken")
    delivery_id = _one_delivery(app)
    r = _report(app, delivery_id, "RECEIVED")
    assert r.status_code == 409
    assert "ERROR" in r.json()["message"]
    assert app.client.delivery(delivery_id).status == "ERROR"


def test_another_apps_key_cannot_report_on_a_delivery(app: AppHandle) -> None:
    app.ios("eve")
    delivery_id = _one_delivery(app)
    other = app.stack.add_app(f"other-{uuid.uuid4().hex[:8]}")
    assert _report(app, delivery_id, "RECEIVED", key=other.api_key).status_code == 404
    assert app.client.delivery(delivery_id).status == "SENT"


def _basic(alias: str, key: str) -> dict[str, str]:
    return {"Authorization": "Basic " + base64.b64encode(f"{alias}:{key}".encode()).decode()}


def test_basic_authentication_takes_the_keys_alias_and_the_key(app: AppHandle) -> None:
    engine = engine_for(app.stack.database_url)
    key, _ = create_key(engine, app.creds.app_id, ["pushregistrations_read"], alias="myAlias")
    url = f"{app.stack.api_url}/v1/registrations"
    assert httpx.get(url, headers=_basic("myAlias", key)).status_code == 200
    wrong = httpx.get(url, headers=_basic("someoneElse", key))
    assert wrong.status_code == 401 and "alias" in wrong.json()["message"]
    assert httpx.get(url, headers=_basic("myAlias", key + "x")).status_code == 401
    assert httpx.get(url, headers={"Authorization": "Basic !!!"}).status_code == 401


def test_a_key_arrives_as_x_api_key_in_any_case_or_as_app_authorization(app: AppHandle) -> None:
    url = f"{app.stack.api_url}/v1/registrations"
    for headers in (
        {"X-API-KEY": app.creds.api_key},
        {"x-api-key": app.creds.api_key},
        {"Authorization": f"App {app.creds.api_key}"},
    ):
        assert httpx.get(url, headers=headers).status_code == 200, headers
    missing = httpx.get(url)
    assert missing.status_code == 401 and "X-API-Key" in missing.json()["message"]


def test_a_key_over_its_request_quota_gets_429_with_retry_after(app: AppHandle) -> None:
    engine = engine_for(app.stack.database_url)
    key, _ = create_key(engine, app.creds.app_id, ["pushregistrations_read"], requests_per_minute=2)
    if time.time() % 60 > 55:  # the window is a calendar minute: start inside one
        time.sleep(61 - time.time() % 60)
    url = f"{app.stack.api_url}/v1/registrations"
    answers = [httpx.get(url, headers={"X-API-Key": key}) for _ in range(3)]
    assert [a.status_code for a in answers] == [200, 200, 429]
    assert 1 <= int(answers[2].headers["Retry-After"]) <= 60
    assert "2 requests per minute" in answers[2].json()["message"]
    # Other keys of the same app are not affected.
    assert httpx.get(url, headers={"X-API-Key": app.creds.api_key}).status_code == 200


@pytest.mark.parametrize(
    ("current", "reported", "moves"),
    [
        ("SENT", "RECEIVED", True),
        ("SENT", "CONFIRMED", True),
        ("RECEIVED", "CONSUMED", True),
        ("CONSUMED", "RECEIVED", False),
        ("CONFIRMED", "CONSUMED", False),
        ("CONSUMED", "CONSUMED", False),
        ("QUEUED", "RECEIVED", False),  # never sent as far as Pushline knows
        ("ERROR", "RECEIVED", False),
        ("SENT", "SENT", False),  # not something an app reports
    ],
)
def test_engagement_only_ever_moves_a_sent_delivery_forward(
    current: str, reported: str, moves: bool
) -> None:
    assert engagement_moves(current, reported) is moves
