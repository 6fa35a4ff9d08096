"""The provider simulators, driven by the real client libraries (aioapns, firebase-admin).

Each simulator runs as a subprocess (`python -m simulators ...`) on free ports, exactly as
the demo and the benchmarks run it; tests script it through the /control API.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import re
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import firebase_admin
import httpx
import jwt
import pytest
from aioapns import APNs, NotificationRequest, PushType
from aioapns.common import NotificationResult
from aioapns.connection import APNsTLSClientProtocol
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from firebase_admin import credentials, exceptions, messaging

from simulators.apns import client_ssl_context
from simulators.certs import ensure_tls, issue_client_cert
from simulators.cli import announced_ports
from simulators.control import SimulatorControl

ROOT = Path(__file__).resolve().parent.parent
TOPIC = "com.example.pushline"
KEY_ID = "SIMKEY0001"
TEAM_ID = "TEAM000001"
_counter = itertools.count()
# Pushline addresses FCM by registration token; firebase-admin 7.7 prefers installation ids.
pytestmark = [
    pytest.mark.filterwarnings("ignore:Message.token is deprecated:DeprecationWarning"),
    # aioapns 4.0 reads the certificate topic through pyOpenSSL's deprecated API.
    pytest.mark.filterwarnings("ignore:X509.get_subject is deprecated:DeprecationWarning"),
]


def _token(n: int) -> str:
    return f"{n:064x}"


def _ec_pem() -> str:
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


def _start(args: list[str]) -> tuple[subprocess.Popen[str], int, int | None]:
    proc = subprocess.Popen(
        [sys.executable, "-m", "simulators", *args],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert proc.stdout is not None
    line = proc.stdout.readline()
    ports = announced_ports(line)
    if ports is None:
        proc.kill()
        raise RuntimeError(f"simulator failed to start: {line!r}")
    return proc, *ports


def _stop(proc: subprocess.Popen[str]) -> None:
    proc.terminate()
    try:
        proc.wait(10)
    except subprocess.TimeoutExpired:
        proc.kill()


# ---------------------------------------------------------------------------------------
# APNs
# ---------------------------------------------------------------------------------------


@dataclass
class ApnsSim:
    port: int
    tls_dir: Path
    ctl: SimulatorControl
    key_pem: str

    def client(self, **kw: Any) -> APNs:
        """An aioapns client aimed at the simulator; call inside the running loop."""
        port = self.port

        class Protocol(APNsTLSClientProtocol):
            APNS_SERVER = "127.0.0.1"
            APNS_PORT = port

        kw.setdefault("ssl_context", client_ssl_context(self.tls_dir / "ca.pem"))
        if "client_cert" not in kw:
            kw.setdefault("key", self.key_pem)
            kw.setdefault("key_id", KEY_ID)
            kw.setdefault("team_id", TEAM_ID)
            kw.setdefault("topic", TOPIC)
        apns = APNs(**kw)
        apns.pool.protocol_class = Protocol
        return apns


@pytest.fixture(scope="module")
def apns_process(
    tmp_path_factory: pytest.TempPathFactory,
) -> Iterator[tuple[int, int, Path]]:
    tls_dir = tmp_path_factory.mktemp("tls")
    proc, port, control = _start(
        ["apns", "--port", "0", "--control-port", "0", "--tls-dir", str(tls_dir)]
    )
    assert control is not None
    yield port, control, tls_dir
    _stop(proc)


@pytest.fixture
def apns_sim(apns_process: tuple[int, int, Path]) -> Iterator[ApnsSim]:
    port, control, tls_dir = apns_process
    key_pem = _ec_pem()
    with SimulatorControl(f"http://127.0.0.1:{control}") as ctl:
        ctl.wait_ready(10)
        ctl.reset()
        ctl.register_apns_key(KEY_ID, TEAM_ID, private_key_pem=key_pem)
        yield ApnsSim(port, tls_dir, ctl, key_pem)


def send_apns(sim: ApnsSim, requests: list[NotificationRequest], **kw: Any) -> list[Any]:
    async def run() -> list[Any]:
        apns = sim.client(**kw)
        try:
            return list(
                await asyncio.gather(
                    *(asyncio.wait_for(apns.send_notification(r), 10) for r in requests)
                )
            )
        finally:
            apns.pool.close()

    return asyncio.run(run())


def _req(token: str, message: dict[str, Any] | None = None, **kw: Any) -> NotificationRequest:
    return NotificationRequest(
        device_token=token, message=message or {"aps": {"alert": "hello"}}, **kw
    )


def test_apns_good_token_with_key_auth_gets_200_and_is_counted(apns_sim: ApnsSim) -> None:
    (result,) = send_apns(apns_sim, [_req(_token(1))])
    assert (result.status, result.description) == ("200", None)
    stats = apns_sim.ctl.stats()
    assert stats["accepted"] == {_token(1): 1}
    assert stats["accepted_total"] == stats["requests_total"] == 1


def test_apns_non_hex_token_is_bad_device_token(apns_sim: ApnsSim) -> None:
    (result,) = send_apns(apns_sim, [_req("z" * 64)])
    assert (result.status, result.description) == ("400", "BadDeviceToken")
    assert apns_sim.ctl.stats()["rejected"] == {"BadDeviceToken": 1}


def test_apns_scripted_unregistered_is_410_with_millisecond_timestamp(apns_sim: ApnsSim) -> None:
    apns_sim.ctl.script(token=_token(2), then="Unregistered")
    before = int(time.time() * 1000)
    results = send_apns(apns_sim, [_req(_token(2)), _req(_token(2))])
    for result in results:
        assert (result.status, result.description) == ("410", "Unregistered")
        assert before <= result.timestamp <= int(time.time() * 1000)


def test_apns_scripted_unavailable_twice_then_succeeds(apns_sim: ApnsSim) -> None:
    apns_sim.ctl.script(token=_token(3), responses=["ServiceUnavailable", "ServiceUnavailable"])
    outcomes = [
        (r.status, r.description)
        for r in (send_apns(apns_sim, [_req(_token(3))])[0] for _ in range(3))
    ]
    assert outcomes == [("503", "ServiceUnavailable"), ("503", "ServiceUnavailable"), ("200", None)]


def test_apns_payload_over_4096_bytes_is_413_but_voip_allows_5120(apns_sim: ApnsSim) -> None:
    big = {"aps": {"alert": "x" * 4200}}
    alert, voip = send_apns(
        apns_sim,
        [
            _req(_token(4), big),
            _req(_token(5), big, push_type=PushType.VOIP, apns_topic=TOPIC + ".voip"),
        ],
    )
    assert (alert.status, alert.description) == ("413", "PayloadTooLarge")
    assert voip.status == "200"


def test_apns_token_signed_by_unregistered_key_is_invalid_provider_token(
    apns_sim: ApnsSim,
) -> None:
    (result,) = send_apns(apns_sim, [_req(_token(6))], key=_ec_pem())
    assert (result.status, result.description) == ("403", "InvalidProviderToken")


def test_apns_key_restricted_to_topics_disallows_others(apns_sim: ApnsSim) -> None:
    other = _ec_pem()
    apns_sim.ctl.register_apns_key("RESTRICTED", TEAM_ID, private_key_pem=other, topics=[TOPIC])
    ok, voip, refused = send_apns(
        apns_sim,
        [
            _req(_token(7)),
            _req(_token(7), apns_topic=TOPIC + ".voip", push_type=PushType.VOIP),
            _req(_token(7), apns_topic="com.other.app"),
        ],
        key=other,
        key_id="RESTRICTED",
    )
    assert [ok.status, voip.status] == ["200", "200"]
    assert (refused.status, refused.description) == ("400", "TopicDisallowed")


def test_apns_certificate_auth_takes_topic_from_cert_uid(apns_sim: ApnsSim) -> None:
    cert = issue_client_cert(apns_sim.tls_dir, TOPIC)
    # topic=None: aioapns reads the UID from the certificate, as with Apple's certificates.
    ok, voip, refused = send_apns(
        apns_sim,
        [
            _req(_token(8)),
            _req(_token(8), apns_topic=TOPIC + ".voip", push_type=PushType.VOIP),
            _req(_token(8), apns_topic="com.other.app"),
        ],
        client_cert=str(cert),
    )
    assert [ok.status, voip.status] == ["200", "200"]
    assert (refused.status, refused.description) == ("400", "TopicDisallowed")
    headers = apns_sim.ctl.requests(_token(8))[0]["headers"]
    assert "authorization" not in headers  # no provider token on a certificate connection


def test_apns_stats_count_per_token_and_duplicates(apns_sim: ApnsSim) -> None:
    apns_sim.ctl.script(token=_token(11), responses=["TooManyRequests"])
    send_apns(
        apns_sim,
        [_req(_token(9)), _req(_token(9)), _req(_token(9)), _req(_token(10)), _req(_token(11))],
    )
    send_apns(apns_sim, [_req(_token(11))])
    stats = apns_sim.ctl.stats()
    assert stats["accepted"] == {_token(9): 3, _token(10): 1, _token(11): 1}
    assert stats["duplicates"] == 2
    assert stats["rejected"] == {"TooManyRequests": 1}
    assert (stats["requests_total"], stats["accepted_total"], stats["rejected_total"]) == (6, 5, 1)


def test_apns_200_concurrent_sends_on_one_connection_all_succeed(apns_sim: ApnsSim) -> None:
    async def run() -> tuple[list[NotificationResult], int]:
        apns = apns_sim.client(max_connections=1)
        try:
            results = await asyncio.gather(
                *(
                    asyncio.wait_for(apns.send_notification(_req(_token(1000 + i))), 10)
                    for i in range(200)
                )
            )
            return list(results), len(apns.pool.connections)
        finally:
            apns.pool.close()

    results, connections = asyncio.run(run())
    assert connections == 1
    assert all(r.status == "200" for r in results)
    assert apns_sim.ctl.stats()["accepted_total"] == 200


def test_apns_latency_delays_each_stream_without_serialising_them(apns_sim: ApnsSim) -> None:
    apns_sim.ctl.configure(latency_ms=300)
    start = time.perf_counter()
    results = send_apns(apns_sim, [_req(_token(2000 + i)) for i in range(50)], max_connections=1)
    elapsed = time.perf_counter() - start
    assert all(r.status == "200" for r in results)
    assert 0.3 <= elapsed < 2.0  # 50 x 300 ms in series would take 15 s


def test_apns_token_prefix_script_and_outage_apply_to_every_match(apns_sim: ApnsSim) -> None:
    apns_sim.ctl.script(token_prefix="dead", then="Unregistered")
    dead, alive = send_apns(apns_sim, [_req("dead" + "0" * 60), _req("beef" + "0" * 60)])
    assert (dead.status, alive.status) == ("410", "200")
    apns_sim.ctl.configure(outage="Shutdown")
    (result,) = send_apns(apns_sim, [_req(_token(12))])
    assert (result.status, result.description) == ("503", "Shutdown")


def test_apns_captured_requests_show_headers_body_outcome_without_secret(
    apns_sim: ApnsSim,
) -> None:
    request = _req(_token(13), {"aps": {"alert": "hi"}}, priority=5, collapse_key="c1")
    send_apns(apns_sim, [request])
    (captured,) = apns_sim.ctl.requests(_token(13))
    assert captured["outcome"] == "accepted"
    assert captured["body"] == {"aps": {"alert": "hi"}}
    headers = captured["headers"]
    assert headers["authorization"] == "<redacted>"
    assert headers["apns-id"] == request.notification_id
    assert headers["apns-topic"] == TOPIC
    assert (headers["apns-priority"], headers["apns-collapse-id"]) == ("5", "c1")


def test_apns_error_bodies_respect_the_clients_flow_control_window(apns_sim: ApnsSim) -> None:
    """aioapns 4.0 never returns receive-window credit, so after ~64 KiB of error bodies on
    one connection a compliant server (Apple's, and this one) must stop sending them; a
    client protocol that acknowledges received data keeps going."""
    apns_sim.ctl.script(token_prefix="", then="Unregistered")  # ~51-byte body per answer
    port = apns_sim.port

    class Acking(APNsTLSClientProtocol):
        APNS_SERVER = "127.0.0.1"
        APNS_PORT = port

        def on_data_received(self, raw_data: bytes, stream_id: int) -> None:
            self.conn.acknowledge_received_data(len(raw_data), stream_id)
            super().on_data_received(raw_data, stream_id)

    async def run(acking: bool) -> int:
        apns = apns_sim.client(max_connections=1)
        if acking:
            apns.pool.protocol_class = Acking
        answered = 0
        try:
            for i in range(1400):
                await asyncio.wait_for(apns.send_notification(_req(_token(i))), 1)
                answered += 1
        except TimeoutError:
            pass
        finally:
            apns.pool.close()
        return answered

    stalled_after = asyncio.run(run(acking=False))
    assert 1000 < stalled_after < 1400
    assert asyncio.run(run(acking=True)) == 1400


def _bearer(key_pem: str, iat: int | None = None) -> str:
    iat = int(time.time()) if iat is None else iat
    token = jwt.encode(
        {"iss": TEAM_ID, "iat": iat}, key_pem, algorithm="ES256", headers={"kid": KEY_ID}
    )
    return f"bearer {token}"


@pytest.mark.parametrize(
    ("method", "path", "extra", "body", "status", "reason"),
    [
        ("GET", f"/3/device/{_token(1)}", {}, b"", 405, "MethodNotAllowed"),
        ("POST", "/3/other/x", {}, b"{}", 404, "BadPath"),
        (
            "POST",
            f"/3/device/{_token(1)}",
            {"authorization": None},
            b"{}",
            403,
            "MissingProviderToken",
        ),
        (
            "POST",
            f"/3/device/{_token(1)}",
            {"authorization": "expired"},
            b"{}",
            403,
            "ExpiredProviderToken",
        ),
        ("POST", f"/3/device/{_token(1)}", {"apns-topic": None}, b"{}", 400, "MissingTopic"),
        (
            "POST",
            f"/3/device/{_token(1)}",
            {"apns-push-type": "loud"},
            b"{}",
            400,
            "InvalidPushType",
        ),
        ("POST", f"/3/device/{_token(1)}", {"apns-priority": "7"}, b"{}", 400, "BadPriority"),
        (
            "POST",
            f"/3/device/{_token(1)}",
            {"apns-expiration": "soon"},
            b"{}",
            400,
            "BadExpirationDate",
        ),
        (
            "POST",
            f"/3/device/{_token(1)}",
            {"apns-collapse-id": "c" * 65},
            b"{}",
            400,
            "BadCollapseId",
        ),
        ("POST", f"/3/device/{_token(1)}", {"apns-id": "not-a-uuid"}, b"{}", 400, "BadMessageId"),
        ("POST", f"/3/device/{'a' * 63}", {}, b"{}", 400, "BadDeviceToken"),
        ("POST", f"/3/device/{_token(1)}", {}, b"", 400, "PayloadEmpty"),
        ("POST", f"/3/device/{_token(1)}", {}, b"[1]", 400, "PayloadEmpty"),
    ],
)
def test_apns_rejects_malformed_requests_with_apples_reason(
    apns_sim: ApnsSim,
    method: str,
    path: str,
    extra: dict[str, str | None],
    body: bytes,
    status: int,
    reason: str,
) -> None:
    headers: dict[str, str] = {
        "authorization": _bearer(apns_sim.key_pem),
        "apns-topic": TOPIC,
        "apns-id": str(uuid.uuid4()),
    }
    for name, value in extra.items():
        if value is None:
            headers.pop(name)
        elif name == "authorization":
            headers[name] = _bearer(apns_sim.key_pem, iat=int(time.time()) - 3700)
        else:
            headers[name] = value
    with httpx.Client(http2=True, verify=client_ssl_context(apns_sim.tls_dir / "ca.pem")) as c:
        resp = c.request(
            method, f"https://127.0.0.1:{apns_sim.port}{path}", headers=headers, content=body
        )
    assert resp.http_version == "HTTP/2"
    assert (resp.status_code, resp.json()) == (status, {"reason": reason})
    assert resp.headers["apns-id"] == headers["apns-id"]


def test_apns_duplicate_headers_and_quota_retry_after_over_raw_http2(apns_sim: ApnsSim) -> None:
    url = f"https://127.0.0.1:{apns_sim.port}/3/device/{_token(14)}"
    base = [("authorization", _bearer(apns_sim.key_pem)), ("apns-topic", TOPIC)]
    apns_sim.ctl.configure(quota_per_minute=1, retry_after=7)
    with httpx.Client(http2=True, verify=client_ssl_context(apns_sim.tls_dir / "ca.pem")) as c:
        dup = c.post(
            url, headers=[*base, ("apns-priority", "10"), ("apns-priority", "5")], content=b"{}"
        )
        first = c.post(url, headers=base, content=b"{}")
        second = c.post(url, headers=base, content=b"{}")
    assert (dup.status_code, dup.json()["reason"]) == (400, "DuplicateHeaders")
    assert "apns-id" in first.headers and first.status_code == 200
    assert (second.status_code, second.json()["reason"]) == (429, "TooManyRequests")
    assert second.headers["retry-after"] == "7"


def test_an_upper_case_header_name_is_a_malformed_request_the_stream_is_reset(
    apns_sim: ApnsSim,
) -> None:
    """RFC 9113 §8.2.1, as Apple's and Google's front ends apply it. The lean client
    (worker/h2client.py) lower-cases names it is given; h2 itself, below it, does not."""
    from worker.h2client import H2Pool, _Stream

    port = apns_sim.port
    path = f"/3/device/{_token(15)}".encode()
    given = [
        (b"Authorization", _bearer(apns_sim.key_pem).encode()),
        (b"APNs-Topic", TOPIC.encode()),
    ]

    async def run() -> tuple[BaseException | None, int]:
        pool = H2Pool(client_ssl_context(apns_sim.tls_dir / "ca.pem"), 5)
        try:
            conn = await pool._connection("127.0.0.1", port, f"127.0.0.1:{port}")
            sid = conn.conn.get_next_available_stream_id()
            raw = _Stream(asyncio.get_running_loop().create_future())
            conn._streams[sid] = raw
            head = [(b":method", b"POST"), (b":scheme", b"https"), (b":authority", conn.authority)]
            conn.conn.send_headers(sid, [*head, (b":path", path), *given], end_stream=True)
            conn.flush()
            refused = await asyncio.wait_for(asyncio.gather(raw.future, return_exceptions=True), 5)
            answered = await pool.post(f"https://127.0.0.1:{port}{path.decode()}", given, b"{}")
            return refused[0], answered.status
        finally:
            pool.close()

    refused, status = asyncio.run(run())
    assert isinstance(refused, ConnectionError) and "PROTOCOL_ERROR" in str(refused)
    assert status == 200


def test_control_rejects_unknown_reasons_and_keys(apns_sim: ApnsSim) -> None:
    with pytest.raises(ValueError, match="unknown reason"):
        apns_sim.ctl.script(token=_token(1), responses=["NoSuchReason"])
    with pytest.raises(ValueError, match="unknown config keys"):
        apns_sim.ctl.configure(latency=5)


def test_ensure_tls_reuses_existing_files(tmp_path: Path) -> None:
    first = ensure_tls(tmp_path)
    pem = first.ca_cert.read_bytes()
    second = ensure_tls(tmp_path)
    assert second == first and second.ca_cert.read_bytes() == pem


# ---------------------------------------------------------------------------------------
# FCM
# ---------------------------------------------------------------------------------------

FCM_TOKEN = "fcm-token_" + "A" * 40


@dataclass
class FcmSim:
    port: int
    ctl: SimulatorControl
    project: str
    service_account: dict[str, str]

    @property
    def base(self) -> str:
        return f"http://127.0.0.1:{self.port}"


@pytest.fixture(scope="module")
def fcm_port() -> Iterator[int]:
    proc, port, _ = _start(["fcm", "--port", "0"])
    yield port
    _stop(proc)


@pytest.fixture(scope="module")
def rsa_pem() -> str:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


@pytest.fixture
def fcm_sim(fcm_port: int, rsa_pem: str) -> Iterator[FcmSim]:
    n = next(_counter)
    project = f"pushline-test-{n}"
    account = {
        "type": "service_account",
        "project_id": project,
        "private_key_id": f"kid{n:04d}",
        "private_key": rsa_pem,
        "client_email": f"sim-{n}@{project}.iam.gserviceaccount.com",
        "client_id": "1234567890",
        "token_uri": f"http://127.0.0.1:{fcm_port}/token",
    }
    with SimulatorControl(f"http://127.0.0.1:{fcm_port}") as ctl:
        ctl.wait_ready(10)
        ctl.reset()
        ctl.register_service_account(
            account["client_email"], account["private_key_id"], project, private_key_pem=rsa_pem
        )
        yield FcmSim(fcm_port, ctl, project, account)


def fcm_send(
    sim: FcmSim, messages: list[messaging.Message], dry_run: bool = False
) -> messaging.BatchResponse:
    """send_each_async through a fresh firebase App whose messaging service hits the sim."""
    app = firebase_admin.initialize_app(
        credentials.Certificate(dict(sim.service_account)), name=f"sim-{uuid.uuid4().hex}"
    )
    original = messaging._MessagingService.FCM_URL
    # The URL is read when the App's messaging service is created, so patch around that.
    messaging._MessagingService.FCM_URL = sim.base + "/v1/projects/{0}/messages:send"
    try:
        service = messaging._get_messaging_service(app)
    finally:
        messaging._MessagingService.FCM_URL = original

    async def run() -> messaging.BatchResponse:
        try:
            return await messaging.send_each_async(messages, dry_run=dry_run, app=app)
        finally:
            # Close the httpx client on the loop that opened it; delete_app would use a new one.
            await service._async_client.aclose()

    try:
        return asyncio.run(run())
    finally:
        firebase_admin.delete_app(app)


def test_fcm_send_succeeds_with_oauth_and_returns_message_name(fcm_sim: FcmSim) -> None:
    batch = fcm_send(fcm_sim, [messaging.Message(token=FCM_TOKEN, data={"k": "v"})])
    (response,) = batch.responses
    assert response.success, response.exception
    assert re.fullmatch(rf"projects/{fcm_sim.project}/messages/\w+", response.message_id)
    stats = fcm_sim.ctl.stats()
    assert stats["accepted"] == {FCM_TOKEN: 1}
    captured = fcm_sim.ctl.requests(FCM_TOKEN)[0]
    assert captured["body"]["message"] == {"token": FCM_TOKEN, "data": {"k": "v"}}
    assert captured["headers"]["authorization"] == "<redacted>"


def test_fcm_dry_run_is_validated_but_not_counted_as_delivered(fcm_sim: FcmSim) -> None:
    batch = fcm_send(fcm_sim, [messaging.Message(token=FCM_TOKEN)], dry_run=True)
    assert batch.success_count == 1
    stats = fcm_sim.ctl.stats()
    assert (stats["accepted_total"], stats["validated_total"], stats["accepted"]) == (0, 1, {})


def test_fcm_scripted_errors_raise_firebase_admins_typed_exceptions(fcm_sim: FcmSim) -> None:
    cases = {
        "UNREGISTERED": messaging.UnregisteredError,
        "SENDER_ID_MISMATCH": messaging.SenderIdMismatchError,
        "THIRD_PARTY_AUTH_ERROR": messaging.ThirdPartyAuthError,
        "INVALID_ARGUMENT": exceptions.InvalidArgumentError,
        # firebase-admin retries 500/503 itself (0+1+2+4 s), hence `then`, not `responses`.
        "UNAVAILABLE": exceptions.UnavailableError,
        "INTERNAL": exceptions.InternalError,
    }
    tokens = {code: f"{code.lower()}_{'x' * 24}" for code in cases}
    for code, token in tokens.items():
        fcm_sim.ctl.script(token=token, then=code)
    batch = fcm_send(fcm_sim, [messaging.Message(token=t) for t in tokens.values()])
    for (code, expected), response in zip(cases.items(), batch.responses, strict=True):
        assert type(response.exception) is expected, (code, response.exception)
    assert fcm_sim.ctl.stats()["rejected"]["UNAVAILABLE"] == 5  # first try + 4 retries


def test_fcm_quota_exceeded_carries_readable_retry_after(fcm_sim: FcmSim) -> None:
    fcm_sim.ctl.configure(retry_after=60)
    fcm_sim.ctl.script(token=FCM_TOKEN, responses=["QUOTA_EXCEEDED"])
    (response,) = fcm_send(fcm_sim, [messaging.Message(token=FCM_TOKEN)]).responses
    assert isinstance(response.exception, messaging.QuotaExceededError)
    assert response.exception.http_response.status_code == 429
    assert response.exception.http_response.headers["Retry-After"] == "60"


def test_fcm_project_quota_per_minute_answers_quota_exceeded(fcm_sim: FcmSim) -> None:
    fcm_sim.ctl.configure(quota_per_minute=2)
    batch = fcm_send(fcm_sim, [messaging.Message(token=f"{FCM_TOKEN}{i}") for i in range(3)])
    assert batch.success_count == 2
    (failed,) = [r for r in batch.responses if not r.success]
    assert isinstance(failed.exception, messaging.QuotaExceededError)
    assert 1 <= int(failed.exception.http_response.headers["Retry-After"]) <= 60


def test_fcm_project_quota_can_be_counted_in_one_second_windows(fcm_sim: FcmSim) -> None:
    # 120 a minute in 1-second windows: 2 per window. Six sends at once span at most two
    # windows, so 2 to 4 succeed and the rest wait 1 s.
    fcm_sim.ctl.configure(quota_per_minute=120, quota_window_s=1)
    batch = fcm_send(fcm_sim, [messaging.Message(token=f"{FCM_TOKEN}{i}") for i in range(6)])
    assert 2 <= batch.success_count <= 4
    failed = [r.exception for r in batch.responses if not r.success]
    assert all(isinstance(e, messaging.QuotaExceededError) for e in failed)
    assert {e.http_response.headers["Retry-After"] for e in failed} == {"1"}
    with pytest.raises(ValueError, match="quota_window_s"):
        fcm_sim.ctl.configure(quota_window_s=0)


def test_fcm_malformed_token_is_invalid_argument(fcm_sim: FcmSim) -> None:
    (response,) = fcm_send(fcm_sim, [messaging.Message(token="short!")]).responses
    assert isinstance(response.exception, exceptions.InvalidArgumentError)
    error = json.loads(response.exception.http_response.content)["error"]
    assert error["details"][0]["errorCode"] == "INVALID_ARGUMENT"
    assert error["details"][1]["fieldViolations"][0]["field"] == "message.token"


def _access_token(sim: FcmSim, key_pem: str | None = None) -> httpx.Response:
    now = int(time.time())
    assertion = jwt.encode(
        {
            "iss": sim.service_account["client_email"],
            "aud": sim.service_account["token_uri"],
            "iat": now,
            "exp": now + 3600,
            "scope": "https://www.googleapis.com/auth/firebase.messaging",
        },
        key_pem or sim.service_account["private_key"],
        algorithm="RS256",
        headers={"kid": sim.service_account["private_key_id"]},
    )
    return httpx.post(
        sim.service_account["token_uri"],
        data={"grant_type": "urn:ietf:params:oauth:grant-type:jwt-bearer", "assertion": assertion},
    )


def test_fcm_token_endpoint_rejects_assertion_signed_by_another_key(fcm_sim: FcmSim) -> None:
    other = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    other_pem = other.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()
    resp = _access_token(fcm_sim, other_pem)
    assert resp.status_code == 400 and resp.json()["error"] == "invalid_grant"


@pytest.mark.parametrize(
    ("message", "field"),
    [
        ({"token": FCM_TOKEN, "data": {"flag": True}}, "message.data[0].value"),
        ({"token": FCM_TOKEN, "android": {"ttl": "2419201s"}}, "message.android.ttl"),
        ({"token": FCM_TOKEN, "topic": "news"}, "message"),
        ({"token": FCM_TOKEN, "data": {"blob": "x" * 5000}}, "message"),
    ],
)
def test_fcm_raw_invalid_messages_are_400_invalid_argument(
    fcm_sim: FcmSim, message: dict[str, Any], field: str
) -> None:
    access = _access_token(fcm_sim).json()["access_token"]
    resp = httpx.post(
        f"{fcm_sim.base}/v1/projects/{fcm_sim.project}/messages:send",
        headers={"authorization": f"Bearer {access}"},
        json={"message": message},
    )
    error = resp.json()["error"]
    assert (resp.status_code, error["status"]) == (400, "INVALID_ARGUMENT")
    assert error["details"][1]["fieldViolations"][0]["field"] == field


def test_fcm_access_token_only_works_for_its_own_project(fcm_sim: FcmSim) -> None:
    access = _access_token(fcm_sim).json()["access_token"]
    body = {"message": {"token": FCM_TOKEN}}
    other = httpx.post(
        f"{fcm_sim.base}/v1/projects/someone-else/messages:send",
        headers={"authorization": f"Bearer {access}"},
        json=body,
    )
    anonymous = httpx.post(f"{fcm_sim.base}/v1/projects/{fcm_sim.project}/messages:send", json=body)
    assert (other.status_code, other.json()["error"]["status"]) == (403, "PERMISSION_DENIED")
    assert (anonymous.status_code, anonymous.json()["error"]["status"]) == (401, "UNAUTHENTICATED")


def test_fast_huffman_decoder_matches_hpack_on_valid_and_invalid_input() -> None:
    import os
    import random

    from hpack.exceptions import HPACKDecodingError
    from hpack.huffman import HuffmanEncoder
    from hpack.huffman_constants import REQUEST_CODES, REQUEST_CODES_LENGTH
    from hpack.huffman_table import decode_huffman as reference

    from simulators.fasthpack import decode_huffman

    def outcome(fn: Any, data: bytes) -> bytes | None:
        try:
            return bytes(fn(data))
        except HPACKDecodingError:
            return None

    encoder = HuffmanEncoder(REQUEST_CODES, REQUEST_CODES_LENGTH)
    rng = random.Random(7)
    for _ in range(2000):
        plain = os.urandom(rng.randint(0, 64))
        assert decode_huffman(encoder.encode(plain)) == plain
        noise = os.urandom(rng.randint(1, 16))
        assert outcome(decode_huffman, noise) == outcome(reference, noise)
