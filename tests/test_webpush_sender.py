"""Pushline's Web Push sender against the Web Push simulator over HTTP/2 + TLS, and the
simulator's own checks (VAPID, RFC 8030 headers, size, decryption) over raw requests."""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import json
import os
import ssl
import time
import uuid
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from schemas.settings import Settings
from schemas.tables import App
from schemas.webpush import load_vapid_key, new_vapid_pem, public_key_b64
from tests.conftest import Sim, simulator
from worker.outcomes import ProviderAnswer, classify
from worker.payloads import (
    WEBPUSH_MAX_BYTES,
    build_webpush,
    webpush_encrypted_size,
    webpush_plaintext,
    webpush_too_large,
    webpush_topic,
)
from worker.webpush import VapidTokens, WebPushSender, encrypt, request_headers, retry_after_s


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    with simulator("webpush", tmp_path_factory.mktemp("tls")) as running:
        yield running


@pytest.fixture
def clean(sim: Sim) -> Sim:
    sim.control.reset()
    sim.control.refuse_tls(False)
    return sim


def web_app(pem: str | None = None) -> App:
    return App(
        id=uuid.uuid4().hex,
        name="web",
        webpush_private_key_pem=pem or new_vapid_pem(),
        webpush_subject="mailto:ops@example.com",
        updated_at=dt.datetime.now(dt.UTC),
    )


def subscribe(sim: Sim, app: App) -> tuple[str, tuple[str, str]]:
    assert app.webpush_private_key_pem
    sub = sim.control.subscribe_webpush(public_key_b64(load_vapid_key(app.webpush_private_key_pem)))
    return sub["endpoint"], (sub["keys"]["p256dh"], sub["keys"]["auth"])


REQ = build_webpush({"alert": {"title": "t", "body": "b"}, "data": {"k": "v"}}, 60)


def send_all(
    app: App, settings: Settings, items: list[tuple[str, tuple[str, str]]]
) -> tuple[list[ProviderAnswer], int]:
    async def run() -> tuple[list[ProviderAnswer], int]:
        sender = WebPushSender(app, settings)
        try:
            answers = await asyncio.gather(*(sender.send(e, k, REQ) for e, k in items))
            return list(answers), sender.vapid.minted
        finally:
            await sender.aclose()

    return asyncio.run(run())


def settings_for(sim: Sim, **kw: object) -> Settings:
    return Settings(webpush_ca_file=sim.ca, **kw)  # type: ignore[arg-type]


def test_concurrent_sends_share_one_vapid_token_and_one_http2_connection(clean: Sim) -> None:
    app = web_app()
    subs = [subscribe(clean, app) for _ in range(60)]
    answers, minted = send_all(app, settings_for(clean, send_concurrency=20), subs)
    assert {a.status for a in answers} == {201}
    stats = clean.control.stats()
    assert stats["accepted"] == {endpoint: 1 for endpoint, _ in subs}
    assert (minted, stats["vapid_checked"]) == (1, 1)  # one token, verified once
    assert (stats["h2_connections"], stats["h2_requests"]) == (1, 60)
    assert stats["decrypted_total"] == 60
    [req] = clean.control.requests(subs[0][0])
    assert req["body"] == REQ.body  # what the service worker reads, decrypted


def test_a_push_signed_by_a_key_other_than_the_subscriptions_is_403_and_code_4(
    clean: Sim,
) -> None:
    endpoint, keys = subscribe(clean, web_app())
    [answer], _ = send_all(web_app(), settings_for(clean), [(endpoint, keys)])
    assert answer.status == 403
    assert classify("webpush", answer).code == 4


def test_scripted_answers_are_classified_by_the_table(clean: Sim) -> None:
    cases = {
        "Gone": (7, False, True),
        "NotFound": (7, False, True),
        "PayloadTooLarge": (9, False, False),
        "BadRequest": (1, False, False),
        "Unauthorized": (4, False, False),
        "TooManyRequests": (8, True, False),
        "InternalServerError": (11, True, False),
        "ServiceUnavailable": (11, True, False),
    }
    app = web_app()
    subs = {reason: subscribe(clean, app) for reason in cases}
    for reason, (endpoint, _) in subs.items():
        clean.control.script(token=endpoint, then=reason)
    clean.control.configure(retry_after=7)
    answers, _ = send_all(app, settings_for(clean), list(subs.values()))
    for (reason, (code, retry, deactivate)), answer in zip(cases.items(), answers, strict=True):
        outcome = classify("webpush", answer)
        assert (outcome.code, outcome.retry, outcome.deactivate) == (code, retry, deactivate), (
            reason
        )
    by_reason = dict(zip(cases, answers, strict=True))
    assert by_reason["TooManyRequests"].retry_after == 7.0
    assert by_reason["Gone"].retry_after is None


def test_refused_connections_and_timeouts_are_no_answer_code_minus_1(clean: Sim) -> None:
    app = web_app()
    sub = subscribe(clean, app)
    clean.control.refuse_tls(True)
    [refused], _ = send_all(app, settings_for(clean), [sub])
    clean.control.refuse_tls(False)
    clean.control.configure(latency_ms=2000)
    [slow], _ = send_all(app, settings_for(clean, send_timeout_s=0.3), [sub])
    for answer in (refused, slow):
        assert answer.status is None
        assert classify("webpush", answer).code == -1
    assert slow.reason == "timeout"


def raw_push(sim: Sim, endpoint: str, headers: dict[str, str], body: bytes) -> httpx.Response:
    with httpx.Client(http2=True, verify=ssl.create_default_context(cafile=sim.ca)) as client:
        return client.post(endpoint, content=body, headers=headers)


def test_the_simulator_checks_vapid_and_rfc8030_headers(clean: Sim) -> None:
    app = web_app()
    endpoint, keys = subscribe(clean, app)
    assert app.webpush_private_key_pem
    body = encrypt(webpush_plaintext(REQ), *keys)
    vapid = VapidTokens(app.webpush_private_key_pem, "mailto:ops@example.com")
    good = request_headers(REQ, vapid.header(f"https://127.0.0.1:{clean.port}"))
    assert raw_push(clean, endpoint, good, body).status_code == 201

    wrong_aud = {**good, "authorization": vapid.header("https://push.example.com")}
    no_auth = {k: v for k, v in good.items() if k != "authorization"}
    no_ttl = {k: v for k, v in good.items() if k != "ttl"}
    long_lived = VapidTokens(app.webpush_private_key_pem, "mailto:ops@example.com", 48 * 3600)
    assert long_lived.ttl_s == 24 * 3600  # the sender never asks for more than 24 h
    long_lived.ttl_s = 48 * 3600  # forced, to see the push service refuse it
    too_long = {
        **good,
        "authorization": long_lived.header(f"https://127.0.0.1:{clean.port}"),
    }
    cases = [
        (wrong_aud, body, 401),
        (no_auth, body, 401),
        (too_long, body, 401),
        (no_ttl, body, 400),
        ({**good, "urgency": "urgent"}, body, 400),
        ({**good, "topic": "has spaces"}, body, 400),
        ({**good, "content-encoding": "aesgcm"}, body, 400),
        (good, b"not encrypted at all", 400),
        (good, body + b"x" * WEBPUSH_MAX_BYTES, 413),
    ]
    for headers, content, status in cases:
        resp = raw_push(clean, endpoint, headers, content)
        assert resp.status_code == status, (headers, resp.text)
    unknown = endpoint.rsplit("/", 1)[0] + "/nosuchsubscription"
    assert raw_push(clean, unknown, good, body).status_code == 404
    clean.control.unsubscribe_webpush(endpoint)
    assert raw_push(clean, endpoint, good, body).status_code == 410
    assert clean.control.stats()["accepted"] == {endpoint: 1}


def test_the_encrypted_size_is_known_before_encrypting() -> None:
    sub = subscribe_locally()
    for size in (1, 100, 3000):  # never empty: every payload carries its notificationId
        plaintext = b"x" * size
        assert len(encrypt(plaintext, *sub)) == webpush_encrypted_size(size)
    big = build_webpush({"alert": {"body": "é" * 2040}, "data": {"pad": "x" * 1900}})
    small = build_webpush({"alert": {"body": "hi"}})
    assert (webpush_too_large(big), webpush_too_large(small)) == (True, False)


def subscribe_locally() -> tuple[str, str]:
    from cryptography.hazmat.primitives.asymmetric import ec

    from schemas.webpush import b64url

    key = ec.generate_private_key(ec.SECP256R1())
    return public_key_b64(key), b64url(os.urandom(16))


def test_topic_urgency_ttl_and_retry_after_rules() -> None:
    assert webpush_topic("order-42") == "order-42"
    digest = webpush_topic("an id with spaces and more than thirty-two characters")
    assert digest is not None and len(digest) == 32
    assert digest == webpush_topic("an id with spaces and more than thirty-two characters")
    normal = build_webpush({"alert": {"body": "x"}, "priority": "normal", "time_to_live": 30})
    assert (normal.urgency, normal.ttl) == ("normal", 30)
    block = build_webpush({"alert": {"body": "x"}, "time_to_live": 300, "webpush": {"ttl": 60}})
    assert block.ttl == 60
    assert build_webpush({"alert": {"body": "x"}}).ttl == 2_419_200
    now = time.time()
    date = time.strftime("%a, %d %b %Y %H:%M:%S GMT", time.gmtime(now + 120))
    assert retry_after_s("30") == 30.0
    after = retry_after_s(date, now)
    assert after is not None and 118 <= after <= 121
    assert retry_after_s("soon") is None
    assert json.loads(webpush_plaintext(normal)) == normal.body


def test_pushline_apps_create_webpush_generates_a_key_pair_or_takes_a_pem(tmp_path: Path) -> None:
    from tests.test_cli import run

    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PUSHLINE_LOG_JSON": "false"}
    assert run("db", "upgrade", env=env).returncode == 0
    made = run(
        "apps",
        "create",
        "site",
        "--webpush",
        "--webpush-subject",
        "mailto:ops@example.com",
        env=env,
    )
    assert made.returncode == 0, made.stdout
    generated = made.stdout.split("Web Push public key ")[1].split()[0]
    pem = new_vapid_pem()
    (tmp_path / "vapid.pem").write_text(pem)
    given = run(
        "apps",
        "create",
        "site2",
        "--webpush-key-file",
        str(tmp_path / "vapid.pem"),
        "--webpush-subject",
        "https://example.com/contact",
        env=env,
    )
    assert given.returncode == 0, given.stdout
    assert (
        given.stdout.split("Web Push public key ")[1].split()[0]
        == public_key_b64(load_vapid_key(pem))
        != generated
    )
    no_sub = run("apps", "create", "site3", "--webpush", env=env)
    assert no_sub.returncode == 2 and "--webpush-subject" in no_sub.stdout + no_sub.stderr
    bad_sub = run("apps", "create", "site4", "--webpush", "--webpush-subject", "ops", env=env)
    assert bad_sub.returncode == 2 and "mailto:" in bad_sub.stderr  # errors: one line on stderr


def test_a_connection_the_push_service_drops_is_opened_again_for_the_next_send(
    clean: Sim,
) -> None:
    app = web_app()
    first, second = subscribe(clean, app), subscribe(clean, app)

    async def run() -> list[ProviderAnswer]:
        sender = WebPushSender(app, settings_for(clean))
        try:
            before = await sender.send(*first, REQ)
            clean.control.refuse_tls(True)  # beginning a refusal drops the live connection
            clean.control.refuse_tls(False)
            await asyncio.sleep(0.2)  # the loss reaches the client
            after = await sender.send(*second, REQ)
            return [before, after]
        finally:
            await sender.aclose()

    answers = asyncio.run(run())
    assert [a.status for a in answers] == [201, 201]
    stats = clean.control.stats()
    assert stats["accepted"] == {first[0]: 1, second[0]: 1}
    assert (stats["h2_connections"], stats["h2_requests"]) == (2, 2)


def test_an_origin_without_http2_is_sent_to_over_http1(clean: Sim, tmp_path: Path) -> None:
    """A push service that does not choose HTTP/2 by ALPN gets the same request over
    HTTP/1.1 (httpx), and the sender remembers it for the origin's later sends."""
    from simulators.certs import ensure_tls

    tls = ensure_tls(tmp_path)
    app = web_app()
    keys = subscribe(clean, app)[1]  # real subscription keys, so the payload encrypts
    seen: list[tuple[str, bytes, int]] = []  # ALPN, request head, body length

    async def serve(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        alpn = writer.get_extra_info("ssl_object").selected_alpn_protocol()
        with contextlib.suppress(asyncio.IncompleteReadError, ConnectionError):
            while head := await reader.readuntil(b"\r\n\r\n"):
                length = int(head.lower().split(b"content-length:")[1].split(b"\r\n")[0])
                body = await reader.readexactly(length)
                seen.append((alpn, head, len(body)))
                writer.write(b"HTTP/1.1 201 Created\r\nLocation: /m/1\r\nContent-Length: 0\r\n\r\n")
                await writer.drain()
        writer.close()

    async def run() -> list[ProviderAnswer]:
        context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
        context.load_cert_chain(tls.server_cert, tls.server_key)
        context.set_alpn_protocols(["http/1.1"])
        server = await asyncio.start_server(serve, "127.0.0.1", 0, ssl=context)
        port = server.sockets[0].getsockname()[1]
        settings = Settings(webpush_ca_file=str(tls.ca_cert))
        sender = WebPushSender(app, settings)
        try:
            url = f"https://127.0.0.1:{port}/push/"
            return [await sender.send(url + str(i), keys, REQ) for i in range(2)]
        finally:
            await sender.aclose()
            server.close()

    answers = asyncio.run(run())
    assert [(a.status, a.ref) for a in answers] == [(201, "/m/1")] * 2
    assert [(alpn, head.split(b" ")[:2]) for alpn, head, _ in seen] == [
        ("http/1.1", [b"POST", b"/push/0"]),
        ("http/1.1", [b"POST", b"/push/1"]),
    ]
    assert all(b"content-encoding: aes128gcm" in head.lower() for _, head, _ in seen)
    assert all(length > 0 for _, _, length in seen)


def test_a_push_service_behind_the_process_https_proxy_is_reached_through_it(
    clean: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    """HTTPS_PROXY is honoured as it always was (httpx), and NO_PROXY lets an origin be
    reached directly (over the lean HTTP/2 client)."""
    from producer.stack import free_port

    app = web_app()
    sub = subscribe(clean, app)
    for name in ("NO_PROXY", "no_proxy", "https_proxy"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setenv("HTTPS_PROXY", f"http://127.0.0.1:{free_port()}")  # nothing listens
    [through_proxy], _ = send_all(app, settings_for(clean), [sub])
    assert (through_proxy.status, through_proxy.reason) == (None, "connection")
    assert clean.control.stats()["accepted"] == {}

    monkeypatch.setenv("NO_PROXY", "127.0.0.1")
    [direct], _ = send_all(app, settings_for(clean), [sub])
    assert direct.status == 201
    assert clean.control.stats()["h2_connections"] == 1
