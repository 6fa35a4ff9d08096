"""No secret and no full device token in any log line of any Pushline process.

One stack of its own logs at DEBUG in JSON; the test drives it through pushes,
registrations, failures and errors on the native API and every seed surface, then scans
every line of the API's, the worker's and the scheduler's logs for each secret it made or
the stack holds: API keys (also in Backendless paths and Basic headers), the webhook
secret, the APNs and FCM private keys, JWTs and bearer tokens, full device tokens."""

from __future__ import annotations

import base64
import json
import re
import secrets
import time
import uuid
from collections.abc import Iterator

import httpx
import pytest
from sqlmodel import Session

from producer.stack import Stack
from schemas.db import engine_for
from schemas.tables import App
from tests.conftest import REDIS, TEST_ENV, AppHandle, fresh_postgres

HOOK_PASSWORD, HOOK_SIG = secrets.token_hex(12), secrets.token_hex(12)
# An unreachable receiver whose URL carries credentials: its failures are logged.
HOOK_URL = f"http://hook:{HOOK_PASSWORD}@127.0.0.1:9/never?sig={HOOK_SIG}"
JWT = re.compile(r"eyJ[A-Za-z0-9_-]{8,}\.eyJ[A-Za-z0-9_-]{8,}")
PROCESSES = ("api", "worker", "scheduler")


@pytest.fixture(scope="module")
def loud_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {**TEST_ENV, "PUSHLINE_LOG_LEVEL": "DEBUG", "PUSHLINE_LOG_JSON": "true"}
    env["PUSHLINE_REDIS_KEY_PREFIX"] = f"secrets{uuid.uuid4().hex[:6]}:"
    stack = Stack(
        tmp_path_factory.mktemp("secrets"),
        redis_url=f"{REDIS}/11",
        database_url=fresh_postgres(f"pushline_secrets_{uuid.uuid4().hex[:8]}"),
        extra_env=env,
    )
    yield stack.start()
    stack.stop()


def pem_body_lines(pem: str) -> list[str]:
    """The base64 lines of a PEM: any of them in a log is a leaked key."""
    return [line for line in pem.splitlines() if line and not line.startswith("-----")]


def drive_every_surface(app: AppHandle) -> list[str]:
    """Pushes, registrations, failures and errors everywhere; returns the device tokens."""
    base, key, app_id = app.stack.api_url, app.creds.api_key, app.creds.app_id
    # First, before anything caches the app's (empty) subscriptions.
    hook = httpx.post(
        f"{base}/v1/webhooks",
        headers={"X-API-Key": key},
        json={"url": HOOK_URL, "secret": "webhook-" + secrets.token_hex(16)},
    )
    assert hook.status_code == 201, hook.text
    tokens = [app.ios(username="ann"), app.android(username="ann")]
    gone, bad = secrets.token_hex(32), secrets.token_hex(32)
    app.stack.apns.script(token=gone, then="Unregistered")
    app.stack.apns.script(token=bad, then="BadDeviceToken")
    for t in (gone, bad):
        app.client.register({"token": f"iOS:{t}", "username": "bob"})
    tokens += [gone, bad]
    app.push_users("ann", "bob")

    # Backendless: the key is in the path.
    bl_token = secrets.token_hex(32)
    tokens.append(bl_token)
    bl = f"{base}/{app_id}/{key}/messaging"
    body = {"deviceToken": bl_token, "deviceId": uuid.uuid4().hex, "os": "IOS", "osVersion": "17"}
    assert httpx.post(f"{bl}/registrations", json=body).status_code == 200
    assert httpx.post(f"{bl}/default", json={"message": "hi"}).status_code == 200
    assert (
        httpx.post(f"{base}/{app_id}/pl_wrong{key[8:]}/messaging/default", json={}).status_code
        >= 400
    )
    # Infobip: `Authorization: App <key>`.
    infobip = httpx.post(
        f"{base}/push/2/message/single",
        headers={"Authorization": f"App {key}"},
        json={"from": app_id, "destinations": [{"to": {"username": "ann"}}], "text": "t"},
    )
    assert infobip.status_code < 500
    # SAP: Basic credentials with the key as password.
    basic = base64.b64encode(f"user:{key}".encode()).decode()
    sap = httpx.post(
        f"{base}/mobileservices/push/v2/backend/applications/any/notifications/users",
        headers={"Authorization": f"Basic {basic}", "content-type": "application/json"},
        json={"users": ["ann"], "notification": {"notification": {"alert": "hello"}}},
    )
    assert sap.status_code < 500
    # Native errors: a wrong key, invalid JSON, a bad token, a key in a query string.
    assert httpx.get(f"{base}/v1/messages/x", headers={"X-API-Key": key + "x"}).status_code == 401
    bad_json = httpx.post(
        f"{base}/v1/messages",
        headers={"X-API-Key": key, "content-type": "application/json"},
        content=b"{nope",
    )
    assert bad_json.status_code == 400
    assert (
        httpx.get(f"{base}/v1/registrations?api_key={key}", headers={"X-API-Key": key}).status_code
        < 500
    )
    time.sleep(3)  # the webhook worker tries its unreachable URL; the last lines are written
    return tokens


def test_no_secret_or_full_token_reaches_any_log_line(loud_stack: Stack) -> None:
    app = AppHandle(loud_stack, loud_stack.add_app("secrets"))
    tokens = drive_every_surface(app)
    with Session(engine_for(loud_stack.database_url or "")) as s:
        row = s.get(App, app.creds.app_id)
        assert row is not None and row.apns_key_pem and row.fcm_service_account
        fcm_key = json.loads(row.fcm_service_account)["private_key"]
        pem_lines = pem_body_lines(row.apns_key_pem) + pem_body_lines(fcm_key)
    secret_values = [app.creds.api_key, HOOK_PASSWORD, HOOK_SIG, *tokens, *pem_lines]
    webhook_secret_prefix = "webhook-"

    lines = []
    for name in PROCESSES:
        lines += [
            (name, x) for x in (loud_stack.state_dir / f"{name}.log").read_text().splitlines()
        ]
    assert len(lines) > 20  # the processes did log what happened
    hits = [
        (name, value[:12], line[:200])
        for name, line in lines
        for value in secret_values
        if value in line
    ]
    hits += [(n, "jwt", x[:200]) for n, x in lines if JWT.search(x)]
    hits += [(n, "bearer", x[:200]) for n, x in lines if "Bearer " in x or "PRIVATE KEY" in x]
    hits += [(n, "webhook secret", x[:200]) for n, x in lines if webhook_secret_prefix in x]
    assert hits == []
    # The masked Backendless request line is there: the access log does log the path.
    assert any("/messaging/" in x and "pl_***" in x for _, x in lines)


def test_the_access_log_masks_keys_in_paths_and_secret_looking_query_values() -> None:
    from producer.observe import masked_path

    assert masked_path("/a1/pl_SeCrEt-_x/messaging/default") == "/a1/pl_***/messaging/default"
    assert (
        masked_path("/v1/x", "api_key=abc&limit=5&token=t")
        == "/v1/x?api_key=%2A%2A%2A&limit=5&token=%2A%2A%2A"
    )
