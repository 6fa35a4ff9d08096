"""Pushline's Push Kit sender against the Push Kit simulator over HTTP/2 + TLS, the
simulator's own checks over raw requests, and the Push Kit payload rules."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import secrets
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest
import time_machine

from schemas.settings import Settings
from schemas.tables import App
from tests.conftest import Sim, simulator
from worker.hms import HmsSender, illegal_tokens, read_answer
from worker.outcomes import ProviderAnswer, classify
from worker.payloads import (
    HMS_MAX_BYTES,
    HmsRequest,
    build_hms,
    hms_body,
    hms_for_device,
    hms_message,
    hms_too_large,
)


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    with simulator("hms", tmp_path_factory.mktemp("tls")) as running:
        yield running


@pytest.fixture
def clean(sim: Sim) -> Sim:
    sim.control.reset()
    sim.control.refuse_tls(False)
    return sim


def huawei_app(sim: Sim, *, token_ttl_s: int | None = None, register: bool = True) -> App:
    app = App(
        id=uuid.uuid4().hex,
        name="huawei",
        hms_app_id=str(10**11 + secrets.randbelow(10**11)),
        hms_client_secret=secrets.token_hex(32),
        updated_at=dt.datetime.now(dt.UTC),
    )
    if register:
        assert app.hms_app_id and app.hms_client_secret
        sim.control.register_hms_app(app.hms_app_id, app.hms_client_secret, token_ttl_s=token_ttl_s)
    return app


def device() -> str:
    return f"IQAAAACy{secrets.token_urlsafe(48)}"


REQ = build_hms({"alert": {"title": "t", "body": "b"}, "data": {"k": "v"}}, 60)


def settings_for(sim: Sim, **kw: object) -> Settings:
    base = f"https://127.0.0.1:{sim.port}"
    return Settings(  # type: ignore[arg-type]
        hms_token_url=f"{base}/oauth2/v3/token", hms_push_url=base, hms_ca_file=sim.ca, **kw
    )


def send_all(
    app: App, settings: Settings, tokens: list[str], req: HmsRequest = REQ, pause_s: float = 0
) -> tuple[list[ProviderAnswer], int]:
    """Send to each token at once (or one after another, `pause_s` apart); (answers, tokens
    the sender minted)."""

    async def run() -> tuple[list[ProviderAnswer], int]:
        sender = HmsSender(app, settings)
        try:
            if not pause_s:
                answers = await asyncio.gather(*(sender.send(t, req) for t in tokens))
                return list(answers), sender.tokens.minted
            out = []
            for t in tokens:
                out.append(await sender.send(t, req))
                await asyncio.sleep(pause_s)
            return out, sender.tokens.minted
        finally:
            await sender.aclose()

    return asyncio.run(run())


def test_concurrent_sends_share_one_access_token_and_one_http2_connection(clean: Sim) -> None:
    app = huawei_app(clean)
    tokens = [device() for _ in range(60)]
    answers, minted = send_all(app, settings_for(clean, send_concurrency=20), tokens)
    assert {(a.status, a.reason) for a in answers} == {(200, "80000000")}
    assert all(a.ref for a in answers)  # Push Kit's requestId
    assert {classify("hms", a).code for a in answers} == {0}
    stats = clean.control.stats()
    assert stats["accepted"] == {t: 1 for t in tokens}
    assert (minted, stats["tokens_issued"]) == (1, 1)
    assert (stats["h2_connections"], stats["h2_requests"]) == (1, 60)
    [req] = clean.control.requests(tokens[0])
    assert req["body"] == json.loads(hms_body(tokens[0], REQ))
    assert req["headers"]["authorization"] == "<redacted>"


def test_an_expired_access_token_is_refreshed_and_the_send_tried_once_more(clean: Sim) -> None:
    app = huawei_app(clean)
    tokens = [device() for _ in range(3)]

    async def run() -> tuple[list[ProviderAnswer], int]:
        sender = HmsSender(app, settings_for(clean))
        try:
            first = await sender.send(tokens[0], REQ)
            clean.control.expire_hms_tokens()  # Push Kit now says 80200003 to the old one
            rest = await asyncio.gather(*(sender.send(t, REQ) for t in tokens[1:]))
            return [first, *rest], sender.tokens.minted
        finally:
            await sender.aclose()

    answers, minted = asyncio.run(run())
    assert [classify("hms", a).code for a in answers] == [0, 0, 0]
    stats = clean.control.stats()
    assert (minted, stats["tokens_issued"]) == (2, 2)  # one refresh for both waiting sends
    assert stats["rejected"] == {"OAUTH_TOKEN_EXPIRED": 2}
    assert stats["accepted"] == {t: 1 for t in tokens}


def test_a_token_near_its_expiry_is_replaced_in_the_background(clean: Sim) -> None:
    app = huawei_app(clean, token_ttl_s=600)  # refreshed within its last minute
    tokens = [device() for _ in range(3)]

    async def run() -> tuple[list[ProviderAnswer], list[int]]:
        sender = HmsSender(app, settings_for(clean))
        try:
            answers = [await sender.send(tokens[0], REQ)]
            minted = [sender.tokens.minted]
            # Our clock 9.5 minutes on (the simulator's is not: the token still works there).
            with time_machine.travel(time.time() + 570, tick=True):
                answers.append(await sender.send(tokens[1], REQ))
                minted.append(sender.tokens.minted)  # sent with the old token, refresh started
                for _ in range(200):
                    if sender.tokens.minted == 2:
                        break
                    await asyncio.sleep(0.01)
                answers.append(await sender.send(tokens[2], REQ))
                minted.append(sender.tokens.minted)
            return answers, minted
        finally:
            await sender.aclose()

    answers, minted = asyncio.run(run())
    assert [classify("hms", a).code for a in answers] == [0, 0, 0]
    assert minted == [1, 1, 2]
    stats = clean.control.stats()
    assert stats["tokens_issued"] == 2 and stats["rejected"] == {}


def test_wrong_credentials_are_code_4_without_a_send(clean: Sim) -> None:
    app = huawei_app(clean, register=False)
    [answer], _ = send_all(app, settings_for(clean), [device()])
    outcome = classify("hms", answer)
    assert (outcome.code, outcome.retry, outcome.deactivate) == (4, False, False)
    assert "invalid client_id" in (answer.detail or "")
    assert clean.control.stats()["requests_total"] == 0


def test_scripted_answers_are_classified_by_the_table(clean: Sim) -> None:
    cases = {
        "INVALID_TOKEN": (7, False, True),
        "PARTIAL_FAILURE": (7, False, True),
        "MESSAGE_TOO_BIG": (9, False, False),
        "MESSAGE_STRUCTURE_ERROR": (1, False, False),
        "PARAMETER_ERROR": (1, False, False),
        "TTL_ERROR": (1, False, False),
        "NO_PERMISSION": (4, False, False),
        "SENSITIVE_CONTENT": (10, False, False),
        "TOO_MANY_REQUESTS": (8, True, False),
        "FLOW_CONTROL": (8, True, False),
        "INTERNAL_ERROR": (11, True, False),
    }
    app = huawei_app(clean)
    tokens = {reason: device() for reason in cases}
    for reason, token in tokens.items():
        clean.control.script(token=token, then=reason)
    clean.control.configure(retry_after=7)
    answers, _ = send_all(app, settings_for(clean), list(tokens.values()))
    for (reason, (code, retry, deactivate)), answer in zip(cases.items(), answers, strict=True):
        outcome = classify("hms", answer)
        assert (outcome.code, outcome.retry, outcome.deactivate) == (code, retry, deactivate), (
            reason,
            answer,
        )
    by_reason = dict(zip(cases, answers, strict=True))
    assert by_reason["FLOW_CONTROL"].retry_after == 7.0
    assert by_reason["INVALID_TOKEN"].reason == "80300007"
    assert by_reason["PARTIAL_FAILURE"].status == 200  # an error in an HTTP 200 answer


def test_refused_connections_and_timeouts_are_no_answer_code_minus_1(clean: Sim) -> None:
    app = huawei_app(clean)
    token = device()
    clean.control.refuse_tls(True)
    [refused], _ = send_all(app, settings_for(clean), [token])
    clean.control.refuse_tls(False)
    clean.control.configure(latency_ms=2000)
    [slow], _ = send_all(app, settings_for(clean, send_timeout_s=0.3), [token])
    for answer in (refused, slow):
        assert answer.status is None
        assert classify("hms", answer).code == -1
    assert slow.reason == "timeout"


def raw_send(sim: Sim, app: App, message: object, bearer: str | None = None) -> httpx.Response:
    verify = ssl.create_default_context(cafile=sim.ca)
    base = f"https://127.0.0.1:{sim.port}"
    with httpx.Client(http2=True, verify=verify) as client:
        if bearer is None:
            got = client.post(
                f"{base}/oauth2/v3/token",
                data={
                    "grant_type": "client_credentials",
                    "client_id": app.hms_app_id,
                    "client_secret": app.hms_client_secret,
                },
            )
            assert got.status_code == 200, got.text
            bearer = got.json()["access_token"]
        return client.post(
            f"{base}/v1/{app.hms_app_id}/messages:send",
            json={"validate_only": False, "message": message},
            headers={"authorization": f"Bearer {bearer}"},
        )


def test_the_simulator_checks_the_bearer_token_and_the_message_shape(clean: Sim) -> None:
    app = huawei_app(clean)
    token = device()
    good = hms_message(token, REQ)
    assert raw_send(clean, app, good).json()["code"] == "80000000"
    notification = good["android"]["notification"]
    cases: list[tuple[object, str]] = [
        ({**good, "token": []}, "80300010"),
        ({**good, "token": token}, "80300010"),
        ({**good, "data": {"k": "v"}}, "80100003"),
        ({**good, "topic": "news"}, "80100003"),
        ({**good, "android": {**good["android"], "urgency": "URGENT"}}, "80100001"),
        ({**good, "android": {**good["android"], "ttl": "86400"}}, "80100004"),
        ({**good, "android": {**good["android"], "collapse_key": 101}}, "80100013"),
        (
            {
                **good,
                "android": {
                    **good["android"],
                    "notification": {k: v for k, v in notification.items() if k != "click_action"},
                },
            },
            "80100003",
        ),
        ({**good, "data": "x" * HMS_MAX_BYTES}, "80300008"),
        ({**good, "token": ["not a token"]}, "80300007"),
    ]
    for message, code in cases:
        resp = raw_send(clean, app, message)
        assert resp.json().get("code") == code, (message, resp.text)
    other = huawei_app(clean)
    assert raw_send(clean, other, good, bearer="made-up").status_code == 401
    assert clean.control.stats()["accepted"] == {token: 1}


def test_the_size_is_checked_on_the_message_as_sent() -> None:
    token = device()
    big = build_hms({"alert": {"body": "é" * 1000}, "data": {"pad": "x" * 1900}})
    small = build_hms({"alert": {"body": "hi"}})
    assert (hms_too_large(token, big), hms_too_large(token, small)) == (True, False)
    body = json.loads(hms_body(token, hms_for_device(small, "d-1")))
    assert body["validate_only"] is False and body["message"]["token"] == [token]
    assert json.loads(body["message"]["data"]) == {"notificationId": "d-1"}


def test_the_payload_follows_push_kits_format() -> None:
    note = build_hms(
        {
            "alert": {"title": "Hi", "body": "there"},
            "collapse_id": "order-42",
            "sound": "default",
            "image": "https://example.com/i.png",
            "priority": "normal",
            "time_to_live": 600,
            "hms": {"category": "IM", "channel_id": "orders", "click_url": "https://x.example"},
        }
    )
    assert note.android == {
        "urgency": "NORMAL",
        "ttl": "600s",
        "category": "IM",
        "notification": {
            "title": "Hi",
            "body": "there",
            "image": "https://example.com/i.png",
            "channel_id": "orders",
            "tag": "order-42",
            "default_sound": True,
            "click_action": {"type": 2, "url": "https://x.example"},
        },
    }
    silent = build_hms(
        {"silent": True, "alert": {"body": "psst"}, "data": {"sync": 1}, "hms": {"ttl": 5}}
    )
    assert silent.android == {"urgency": "HIGH", "ttl": "5s"}  # a data message: no notification
    assert silent.data == {"sync": 1, "pushline": {"alert": {"body": "psst"}}}
    body_only = build_hms({"alert": {"body": "only a body"}}).android["notification"]
    assert (body_only["title"], body_only["body"]) == ("only a body", "only a body")
    assert (
        build_hms({"alert": {"body": "x"}, "time_to_live": 2_419_200}).android["ttl"] == "1296000s"
    )


def test_a_partial_failure_is_this_devices_only_when_it_is_listed() -> None:
    msg = json.dumps({"success": 1, "failure": 1, "illegal_tokens": ["bad"]})
    body = json.dumps({"code": "80100000", "msg": msg, "requestId": "r1"}).encode()
    assert classify("hms", read_answer(200, body, "bad")).code == 7
    assert classify("hms", read_answer(200, body, "good")).code == 0
    assert illegal_tokens(json.dumps({"illegalTokens": {"noRight": ["a"]}})) == {"a"}
    assert illegal_tokens("not json") == set()


def test_pushline_apps_create_with_hms_credentials_checks_them_at_huawei(
    clean: Sim, tmp_path: Path
) -> None:
    from tests.test_cli import run

    app = huawei_app(clean)
    assert app.hms_app_id and app.hms_client_secret
    base = f"https://127.0.0.1:{clean.port}"
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "PUSHLINE_LOG_JSON": "false",
        "PUSHLINE_HMS_TOKEN_URL": f"{base}/oauth2/v3/token",
        "PUSHLINE_HMS_CA_FILE": clean.ca,
    }
    assert run("db", "upgrade", env=env).returncode == 0
    args = ("--hms-app-id", app.hms_app_id, "--hms-client-secret")
    made = run("apps", "create", "phone", *args, app.hms_client_secret, env=env)
    assert made.returncode == 0, made.stdout + made.stderr
    shown = run("apps", "show", "phone", env=env)
    assert f"app id {app.hms_app_id}" in shown.stdout
    assert app.hms_client_secret not in shown.stdout  # the secret is never shown
    wrong = run("apps", "create", "phone2", *args, "not-the-secret", env=env)
    assert wrong.returncode == 2 and "invalid client_secret" in wrong.stderr
    letters = run(
        "apps", "create", "phone3", "--hms-app-id", "abc", "--hms-client-secret", "s", env=env
    )
    assert letters.returncode == 2 and "--hms-app-id" in letters.stderr
    assert clean.control.stats()["tokens_issued"] == 1
