"""The admin API (/v1/apps…): apps and keys without SQL, no secret ever returned."""

from __future__ import annotations

import httpx

from producer.apps import create_key
from producer.stack import Stack
from schemas.db import engine_for
from tests.conftest import AppHandle
from tests.test_cli import sim_account


def test_a_rotated_key_stops_at_once_and_keys_show_state_and_last_use(
    stack: Stack, app: AppHandle
) -> None:
    assert stack.database_url
    operator, _ = create_key(engine_for(stack.database_url), None, ["admin"])
    api = httpx.Client(base_url=stack.api_url, headers={"X-API-Key": operator}, timeout=30)
    base = f"/v1/apps/{app.creds.app_id}"
    assert api.get("/v1/messages").status_code == 403  # an operator key pushes nothing
    made = api.post(f"{base}/keys", json={"roles": ["push_all"], "alias": "svc"})
    assert made.status_code == 201
    old = made.json()["key"]
    basic = httpx.BasicAuth("svc", old)
    assert httpx.get(f"{stack.api_url}/v1/messages", auth=basic).status_code == 200  # cached now
    rotated = api.post(f"{base}/keys/{made.json()['id']}/rotate", json={}).json()
    assert httpx.get(f"{stack.api_url}/v1/messages", auth=basic).status_code == 401
    new = httpx.BasicAuth("svc", rotated["key"])
    assert httpx.get(f"{stack.api_url}/v1/messages", auth=new).status_code == 200
    listed = {k["id"]: k for k in api.get(f"{base}/keys").json()}
    assert listed[made.json()["id"]]["state"] == "revoked"
    assert listed[made.json()["id"]]["last_used_at"] is not None
    assert listed[rotated["id"]]["state"] == "active" and "key" not in listed[rotated["id"]]
    overlap = api.post(f"{base}/keys/{rotated['id']}/rotate", json={"overlap_s": 3600}).json()
    assert httpx.get(f"{stack.api_url}/v1/messages", auth=new).status_code == 200  # overlap
    assert api.post(f"{base}/keys/{overlap['id']}/revoke").json()["state"] == "revoked"
    gone = httpx.BasicAuth("svc", overlap["key"])
    assert httpx.get(f"{stack.api_url}/v1/messages", auth=gone).status_code == 401


def test_credentials_are_checked_on_the_way_in_and_never_returned(
    stack: Stack, app: AppHandle
) -> None:
    api = httpx.Client(base_url=stack.api_url, headers={"X-API-Key": app.creds.api_key}, timeout=30)
    base = f"/v1/apps/{app.creds.app_id}"
    shown = api.get(base)
    assert shown.status_code == 200 and "PRIVATE KEY" not in shown.text
    assert shown.json()["apns"]["auth"] == "key"
    bad = api.patch(base, json={"apns": {"key_pem": "garbage"}})
    assert bad.status_code == 400 and bad.json()["details"][0]["field"] == "apns.key_pem"
    unreachable = sim_account(stack, "other")
    unreachable["token_uri"] = "https://127.0.0.1:1/token"
    refused = api.patch(base, json={"fcm": {"service_account": unreachable}})
    assert refused.status_code == 400 and "could not mint a token" in refused.json()["message"]
    good = api.patch(base, json={"fcm": {"service_account": sim_account(stack, "moved")}})
    assert good.status_code == 200 and good.json()["fcm"]["project_id"] == "moved"
    assert "private_key" not in good.text
    assert api.get("/v1/apps/some-other-app").status_code == 404  # an app key: its own app
    assert [a["id"] for a in api.get("/v1/apps").json()] == [app.creds.app_id]
    assert api.post("/v1/apps", json={"name": "x"}).status_code == 403


def test_an_apps_default_zone_and_quiet_hours_are_set_over_the_admin_api(
    stack: Stack, app: AppHandle
) -> None:
    assert stack.database_url
    operator, _ = create_key(engine_for(stack.database_url), None, ["admin"])
    api = httpx.Client(base_url=stack.api_url, headers={"X-API-Key": operator}, timeout=30)
    base = f"/v1/apps/{app.creds.app_id}"
    assert api.get(base).json()["timezone"] == "UTC"
    quiet = {"start": "22:00", "end": "07:30"}
    changed = api.patch(base, json={"timezone": "Asia/Tokyo", "quiet_hours": quiet})
    assert changed.status_code == 200, changed.text
    assert changed.json()["timezone"] == "Asia/Tokyo" and changed.json()["quiet_hours"] == quiet
    bad = api.patch(base, json={"timezone": "Asia/Atlantis"})
    assert bad.status_code == 400 and bad.json()["details"][0]["field"] == "timezone"
    bad = api.patch(base, json={"quiet_hours": {"start": "22:00"}})
    assert bad.status_code == 400 and bad.json()["details"][0]["field"] == "quiet_hours.end"
    assert api.get(base).json()["timezone"] == "Asia/Tokyo"  # nothing half-written
