"""A provider that cannot be reached: the simulators refuse connections on command (each one
reset before TLS, the live ones dropped), and a delivery then waits QUEUED with code -1
and is SENT once the provider is back, within the attempt limit.

These tests have a stack of their own: refusing connections on the session's shared
simulators would fail other tests' pushes, and retries here start at half a second (not
the session's 50 ms), so a queued delivery does not run out of attempts while it is read.
"""

from __future__ import annotations

import os
import socket
import ssl
import time
import uuid
from collections.abc import Iterator

import pytest

from producer.stack import Stack
from schemas.api import DeliveryOut
from schemas.settings import Settings
from simulators.control import SimulatorControl
from tests.conftest import TEST_ENV, AppHandle, accepted, fresh_redis

MAX_ATTEMPTS = Settings().max_attempts


@pytest.fixture(scope="module")
def own_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Stack]:
    env = {
        **TEST_ENV,
        "PUSHLINE_REDIS_KEY_PREFIX": f"refuse{os.getpid()}:",
        "PUSHLINE_RETRY_BASE_S": "0.5",
    }
    state_dir = tmp_path_factory.mktemp("refuse-stack")
    stack = Stack(state_dir, redis_url=fresh_redis(14), extra_env=env)
    try:
        yield stack.start(scheduler=False)
    finally:
        stack.stop()


@pytest.fixture
def own_app(own_stack: Stack) -> AppHandle:
    return AppHandle(own_stack, own_stack.add_app(f"r-{uuid.uuid4().hex[:12]}"))


def _sim(stack: Stack, provider: str) -> tuple[SimulatorControl, int]:
    return (stack.apns, stack.apns_port) if provider == "apns" else (stack.fcm, stack.fcm_port)


def _tls_handshake(stack: Stack, port: int) -> bool:
    """Whether a TLS connection to the simulator's provider port comes up."""
    ctx = ssl.create_default_context(cafile=str(stack.state_dir / "tls" / "ca.pem"))
    ctx.set_alpn_protocols(["h2"])
    try:
        with (
            socket.create_connection(("127.0.0.1", port), timeout=10) as raw,
            ctx.wrap_socket(raw, server_hostname="127.0.0.1"),
        ):
            return True
    except (OSError, ssl.SSLError):
        return False


@pytest.mark.parametrize("provider", ["apns", "fcm"])
def test_simulator_refuses_exactly_the_next_n_connections_then_accepts(
    own_stack: Stack, provider: str
) -> None:
    sim, port = _sim(own_stack, provider)
    before = sim.stats()["refused_total"]
    state = sim.refuse_connections(attempts=2)
    assert state["refusing"] and state["attempts"] == 2
    assert [_tls_handshake(own_stack, port) for _ in range(3)] == [False, False, True]
    assert sim.stats()["refused_total"] - before == 2
    assert sim.health()  # the control API stays reachable throughout (FCM: the same port)


@pytest.mark.parametrize("provider", ["apns", "fcm"])
def test_simulator_refuses_for_a_while_then_accepts_by_itself(
    own_stack: Stack, provider: str
) -> None:
    sim, port = _sim(own_stack, provider)
    state = sim.refuse_connections(for_s=1.0)
    assert state["refusing"] and state["for_s"] is not None
    assert not _tls_handshake(own_stack, port)
    while sim.refusal()["refusing"]:
        time.sleep(0.1)
    assert _tls_handshake(own_stack, port)


def test_simulator_refusal_rejects_a_control_request_naming_no_mode(own_stack: Stack) -> None:
    with pytest.raises(ValueError, match="exactly one of"):
        own_stack.apns._post("/control/refuse", {})
    with pytest.raises(ValueError, match="attempts must be"):
        own_stack.apns._post("/control/refuse", {"attempts": 0})


def _wait_for_delivery(
    app: AppHandle, message_id: str, want: str, timeout: float = 60
) -> DeliveryOut:
    """The message's one Delivery once `want` ("queued -1" or "final") holds."""
    deadline = time.monotonic() + timeout
    while True:
        items = app.client.deliveries(message_id).items
        if items:
            d = items[0]
            if want == "queued -1" and d.status == "QUEUED" and d.code == -1:
                return d
            if want == "final" and d.status != "QUEUED":
                return d
        assert time.monotonic() < deadline, f"no delivery {want} in {timeout}s: {items}"
        time.sleep(0.05)


@pytest.mark.parametrize("provider", ["apns", "fcm"])
def test_unreachable_provider_leaves_delivery_queued_with_code_minus_1_then_sent(
    own_app: AppHandle, provider: str
) -> None:
    sim, _ = _sim(own_app.stack, provider)
    user = f"u-{uuid.uuid4().hex[:8]}"
    token = own_app.ios(user) if provider == "apns" else own_app.android(user)
    refused_before = sim.stats()["refused_total"]
    sim.refuse_connections()  # until lifted; live connections dropped
    try:
        body = {
            "target": {"type": "users", "usernames": [user]},
            "payload": {"alert": {"title": "t", "body": "b"}},
        }
        message_id = own_app.client.push(body).id
        waiting = _wait_for_delivery(own_app, message_id, "queued -1")
        assert waiting.attempts >= 1
        assert accepted(sim.stats(), token) == 0
    finally:
        sim.stop_refusing()
    done = _wait_for_delivery(own_app, message_id, "final")
    assert (done.status, done.code) == ("SENT", 0)
    assert waiting.attempts < done.attempts <= MAX_ATTEMPTS
    stats = sim.stats()
    assert accepted(stats, token) == 1  # sent once, however often it was tried
    assert stats["refused_total"] > refused_before

