"""Pushline's FCM client against the FCM simulator over HTTP/2 + TLS: one OAuth token and
one connection shared by every send, answers classified exactly as firebase-admin's typed
errors were, no library retries, each call bounded by its timeout."""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import re
import secrets
import uuid
from collections.abc import Iterator

import firebase_admin
import httpx
import pytest
from firebase_admin import credentials, messaging

from schemas.settings import Settings
from schemas.tables import App
from simulators.credentials import make_service_account, service_account_json
from tests.conftest import Sim, simulator
from worker.fcm import FcmSender, to_message
from worker.outcomes import ProviderAnswer, classify
from worker.payloads import build_fcm

pytestmark = pytest.mark.filterwarnings("ignore:Message.token is deprecated:DeprecationWarning")


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    with simulator("fcm", tmp_path_factory.mktemp("tls")) as running:
        yield running


@pytest.fixture
def clean(sim: Sim) -> Sim:
    sim.control.reset()
    return sim


def fcm_app(sim: Sim) -> App:
    """An app whose service account the simulator knows, its token_uri over TLS."""
    project = f"sender-{secrets.token_hex(4)}"
    account = make_service_account(project, f"https://127.0.0.1:{sim.port}/token")
    sim.control.register_service_account(
        account["client_email"],
        account["private_key_id"],
        project,
        private_key_pem=account["private_key"],
    )
    return App(
        id=uuid.uuid4().hex,
        name=project,
        fcm_service_account=service_account_json(account),
        updated_at=dt.datetime.now(dt.UTC),
    )


def settings_for(sim: Sim, **kw: object) -> Settings:
    return Settings(
        fcm_url=f"https://127.0.0.1:{sim.port}/v1/projects/{{0}}/messages:send",
        fcm_ca_file=sim.ca,
        **kw,  # type: ignore[arg-type]
    )


def tokens(n: int, prefix: str = "tok") -> list[str]:
    return [f"{prefix}{i:04d}_{secrets.token_hex(12)}" for i in range(n)]


PARTS = build_fcm({"alert": {"title": "t", "body": "b"}, "data": {"k": "v"}})


def send_rounds(
    app: App, settings: Settings, rounds: list[list[str]]
) -> tuple[list[list[ProviderAnswer]], int]:
    """Each round through the same sender on one loop, as a worker's chunks are."""

    async def run() -> tuple[list[list[ProviderAnswer]], int]:
        sender = FcmSender(app, settings)
        try:
            out = [await sender.send_many([(t, PARTS) for t in batch]) for batch in rounds]
            return out, sender.tokens.minted
        finally:
            await sender.aclose()

    return asyncio.run(run())


def test_concurrent_sends_share_one_access_token_and_one_http2_connection(clean: Sim) -> None:
    first, second = tokens(150, "a"), tokens(50, "b")
    app = fcm_app(clean)
    (answers_1, answers_2), minted = send_rounds(
        app, settings_for(clean, send_concurrency=40), [first, second]
    )
    project = app.name
    for answer in answers_1 + answers_2:
        assert answer.status == 200
        assert answer.ref and re.fullmatch(rf"projects/{project}/messages/\w+", answer.ref)
    stats = clean.control.stats()
    assert stats["accepted"] == {t: 1 for t in first + second}
    # 200 sends, two chunks: one OAuth grant, one TLS connection, every request on HTTP/2.
    assert (minted, stats["tokens_issued"]) == (1, 1)
    assert (stats["h2_connections"], stats["h2_requests"]) == (1, 200)


def test_the_message_on_the_wire_is_firebase_admins_encoding(clean: Sim) -> None:
    [token] = tokens(1)
    app = fcm_app(clean)
    send_rounds(app, settings_for(clean), [[token]])
    [seen] = clean.control.requests(token)
    # The library's encoder, applied to the Message worker/fcm.py builds for these parts.
    expected = messaging._MessagingService.encode_message(to_message(token, PARTS))
    assert seen["body"] == {"message": expected}
    headers = seen["headers"]
    assert headers["x-goog-api-format-version"] == "2"
    assert headers["x-firebase-client"].startswith("fire-admin-python/")
    assert headers["authorization"] == "<redacted>"


def test_fcm_errors_are_classified_as_before_and_never_retried_by_the_library(
    clean: Sim,
) -> None:
    cases = {
        "UNREGISTERED": 7,
        "SENDER_ID_MISMATCH": 6,
        "QUOTA_EXCEEDED": 14,
        "UNAVAILABLE": 11,
        "INTERNAL": 11,
        "THIRD_PARTY_AUTH_ERROR": 4,
        "INVALID_ARGUMENT": 6,  # scripted, it names message.token: the token is bad
    }
    by_code = {code: f"{code.lower()}_{secrets.token_hex(12)}" for code in cases}
    clean.control.configure(retry_after=30)
    for code, token in by_code.items():
        clean.control.script(token=token, responses=[code])
    (answers,), _ = send_rounds(fcm_app(clean), settings_for(clean), [list(by_code.values())])
    for (code, result), answer in zip(cases.items(), answers, strict=True):
        assert (answer.reason, classify("fcm", answer).code) == (code, result), answer
    quota = answers[list(cases).index("QUOTA_EXCEEDED")]
    assert (quota.status, quota.retry_after) == (429, 30.0)
    # Every scripted error was answered once: no retry by the library, not even of a 503,
    # and a THIRD_PARTY_AUTH_ERROR 401 (an FcmError) did not cost a new access token.
    stats = clean.control.stats()
    assert stats["rejected"] == {code: 1 for code in cases}
    assert stats["tokens_issued"] == 1


def test_a_revoked_access_token_is_minted_again_once_and_the_sends_go_through(
    clean: Sim,
) -> None:
    before, after = tokens(20, "before"), tokens(30, "after")
    app = fcm_app(clean)
    settings = settings_for(clean, send_concurrency=10)

    async def run() -> tuple[list[ProviderAnswer], list[ProviderAnswer], int]:
        sender = FcmSender(app, settings)
        try:
            first = await sender.send_many([(t, PARTS) for t in before])
            httpx.post(f"http://127.0.0.1:{clean.port}/control/access-tokens/revoke", json={})
            second = await sender.send_many([(t, PARTS) for t in after])
            return first, second, sender.tokens.minted
        finally:
            await sender.aclose()

    first, second, minted = asyncio.run(run())
    assert all(a.status == 200 for a in first + second)
    stats = clean.control.stats()
    assert stats["accepted"] == {t: 1 for t in before + after}
    # The in-flight sends that met the revoked token were refused once each; one new grant
    # served them all.
    assert (minted, stats["tokens_issued"]) == (2, 2)
    assert 1 <= stats["rejected"]["UNAUTHENTICATED"] <= 10


def test_an_unknown_service_account_is_a_configuration_error_without_a_send(
    clean: Sim,
) -> None:
    app = fcm_app(clean)
    stranger = make_service_account(app.name, f"https://127.0.0.1:{clean.port}/token")
    app.fcm_service_account = service_account_json(stranger)
    app.id = uuid.uuid4().hex  # a firebase app of its own
    (answers,), _ = send_rounds(app, settings_for(clean), [tokens(3)])
    assert {(a.status, classify("fcm", a).code) for a in answers} == {(401, 4)}
    assert clean.control.stats()["requests_total"] == 0


def test_a_send_slower_than_the_timeout_is_code_minus_1_and_the_connection_lives_on(
    clean: Sim,
) -> None:
    slow, fast = tokens(3, "slow"), tokens(3, "fast")
    app = fcm_app(clean)
    settings = settings_for(clean, send_timeout_s=0.3)

    async def run() -> tuple[list[ProviderAnswer], list[ProviderAnswer]]:
        sender = FcmSender(app, settings)
        try:
            await sender.send_many([(t, PARTS) for t in tokens(1, "warm")])
            clean.control.configure(latency_ms=1500)
            late = await sender.send_many([(t, PARTS) for t in slow])
            clean.control.configure(latency_ms=0)
            return late, await sender.send_many([(t, PARTS) for t in fast])
        finally:
            await sender.aclose()

    late, on_time = asyncio.run(run())
    for answer in late:
        outcome = classify("fcm", answer)
        assert (answer.status, outcome.code, outcome.retry) == (None, -1, True)
    assert all(a.status == 200 for a in on_time)
    assert clean.control.stats()["h2_connections"] == 1


def test_stock_firebase_admin_send_each_async_speaks_http2_to_the_simulator(
    clean: Sim, monkeypatch: pytest.MonkeyPatch
) -> None:
    # firebase-admin unmodified (the naive baseline's path): it trusts what the environment
    # names, httpx through SSL_CERT_FILE and google-auth's requests through
    # REQUESTS_CA_BUNDLE.
    monkeypatch.setenv("SSL_CERT_FILE", clean.ca)
    monkeypatch.setenv("REQUESTS_CA_BUNDLE", clean.ca)
    monkeypatch.setattr(
        messaging._MessagingService,
        "FCM_URL",
        f"https://127.0.0.1:{clean.port}/v1/projects/{{0}}/messages:send",
    )
    app = fcm_app(clean)
    assert app.fcm_service_account
    fb = firebase_admin.initialize_app(
        credentials.Certificate(json.loads(app.fcm_service_account)),
        name=f"stock-{app.id}",
    )
    batch = tokens(5)
    service = messaging._get_messaging_service(fb)

    async def run() -> messaging.BatchResponse:
        try:
            return await messaging.send_each_async(
                [messaging.Message(token=t) for t in batch], app=fb
            )
        finally:
            await service._async_client.aclose()

    try:
        result = asyncio.run(run())
    finally:
        firebase_admin.delete_app(fb)
    assert result.success_count == 5
    stats = clean.control.stats()
    assert stats["accepted"] == {t: 1 for t in batch}
    assert stats["h2_requests"] == 5
