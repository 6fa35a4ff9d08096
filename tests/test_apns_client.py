"""Pushline's aioapns client against the APNs simulator: the defects it mends, cert auth."""

from __future__ import annotations

import asyncio
import gc
import secrets
import subprocess
import sys
import tracemalloc
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from aioapns.connection import APNsTLSClientProtocol

from producer.stack import free_port
from schemas.settings import Settings
from schemas.tables import App
from simulators.certs import issue_client_cert
from simulators.control import SimulatorControl
from simulators.credentials import make_apns_key
from worker.apns import ApnsSender
from worker.outcomes import ProviderAnswer
from worker.payloads import build_apns

TOPIC = "com.example.guards"
ROUNDS = 5


@dataclass
class Sim:
    port: int
    control: SimulatorControl
    tls: Path


@pytest.fixture(scope="module")
def sim(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Sim]:
    tls = tmp_path_factory.mktemp("tls")
    port, control_port = free_port(), free_port()
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "simulators",
            "apns",
            "--port",
            str(port),
            "--control-port",
            str(control_port),
            "--tls-dir",
            str(tls),
        ]
    )
    control = SimulatorControl(f"http://127.0.0.1:{control_port}")
    try:
        control.wait_ready(30)
        yield Sim(port, control, tls)
    finally:
        proc.terminate()
        proc.wait(10)


@pytest.fixture
def clean(sim: Sim) -> Sim:
    sim.control.reset()
    return sim


def settings_for(sim: Sim, **kw: object) -> Settings:
    return Settings(
        apns_host="127.0.0.1", apns_port=sim.port, apns_ca_file=str(sim.tls / "ca.pem"), **kw
    )  # type: ignore[arg-type]


def key_app(sim: Sim) -> App:
    key = make_apns_key()
    sim.control.register_apns_key(key.key_id, key.team_id, private_key_pem=key.key_pem)
    return App(
        id="a1",
        name="guards",
        apns_topic=TOPIC,
        apns_key_pem=key.key_pem,
        apns_key_id=key.key_id,
        apns_team_id=key.team_id,
    )


async def send_many(sender: ApnsSender, tokens: list[str]) -> list[ProviderAnswer]:
    req = build_apns({"alert": {"title": "t"}})
    sem = asyncio.Semaphore(100)

    async def one(t: str) -> ProviderAnswer:
        async with sem:
            return await sender.send(t, _uuid(), req)

    return list(await asyncio.gather(*(one(t) for t in tokens)))


def _uuid() -> str:
    import uuid

    return str(uuid.uuid4())


def test_stream_bookkeeping_is_cleared_so_memory_stays_flat(clean: Sim) -> None:
    async def ok_count(sender: ApnsSender, n: int) -> int:
        answers = await send_many(sender, [secrets.token_hex(32) for _ in range(n)])
        return sum(a.status == 200 for a in answers)  # answers are dropped, only memory stays

    async def run() -> tuple[int, int, int]:
        sender = ApnsSender(key_app(clean), settings_for(clean))
        sent = await ok_count(sender, 2000)  # warm up: connection, JWT, h2's closed-stream memory
        tracemalloc.start()
        for _ in range(3):  # tracing allocates its own tables at first: let them settle
            sent += await ok_count(sender, 1000)
        gc.collect()  # finished tasks sit in reference cycles until a collection
        baseline = tracemalloc.get_traced_memory()[0]
        for _ in range(ROUNDS):
            sent += await ok_count(sender, 1000)
        gc.collect()
        grown = tracemalloc.get_traced_memory()[0] - baseline
        tracemalloc.stop()
        [conn] = sender.client.pool.connections
        left = len(conn.request_streams) + len(conn.requests)  # type: ignore[attr-defined]
        sender.close()
        return left, grown, sent

    left, grown, sent = asyncio.run(run())
    assert sent == 5000 + ROUNDS * 1000 and left == 0
    # Unmended, aioapns keeps ~170 bytes per send: ~850 KB over these 5,000; allow a tenth.
    assert grown < 85_000, grown


def test_unmended_aioapns_keeps_an_entry_per_successful_send(clean: Sim) -> None:
    """The defect the guard exists for, shown on the library's own protocol class."""

    async def run() -> int:
        sender = ApnsSender(key_app(clean), settings_for(clean))
        sender.client.pool.protocol_class = type(
            "Plain", (APNsTLSClientProtocol,), {"APNS_SERVER": "127.0.0.1", "APNS_PORT": clean.port}
        )
        await send_many(sender, [secrets.token_hex(32) for _ in range(300)])
        [conn] = sender.client.pool.connections
        sender.close()
        return len(conn.request_streams)

    assert asyncio.run(run()) == 300


def test_an_answer_after_the_timeout_does_not_kill_the_connection(clean: Sim) -> None:
    async def run() -> tuple[ProviderAnswer, list[ProviderAnswer], bool]:
        sender = ApnsSender(key_app(clean), settings_for(clean, send_timeout_s=0.2))
        await send_many(sender, [secrets.token_hex(32)])
        [conn] = sender.client.pool.connections
        clean.control.configure(latency_ms=600)
        late = await sender.send(secrets.token_hex(32), _uuid(), build_apns({"alert": {}}))
        await asyncio.sleep(0.8)  # the answer arrives for a future that gave up
        clean.control.configure(latency_ms=0)
        sender.timeout = 30  # the sends after it must not time out on a busy host
        after = await send_many(sender, [secrets.token_hex(32) for _ in range(50)])
        same = sender.client.pool.connections == [conn]
        sender.close()
        return late, after, same

    late, after, same_connection = asyncio.run(run())
    assert (late.status, late.reason) == (None, "timeout")
    assert [a.status for a in after] == [200] * 50
    assert same_connection


def test_many_error_answers_on_one_connection_do_not_stall_it(clean: Sim) -> None:
    # ~50 bytes of error body each: 2,000 of them overflow the 64 KiB HTTP/2 window unless
    # the client gives it back.
    clean.control.script(token_prefix="dead", then="Unregistered")

    async def run_hex() -> list[ProviderAnswer]:
        sender = ApnsSender(key_app(clean), settings_for(clean, send_timeout_s=5))
        dead = ["dead" + secrets.token_hex(30) for _ in range(2000)]
        answers = await send_many(sender, dead)
        answers += await send_many(sender, [secrets.token_hex(32) for _ in range(10)])
        sender.close()
        return answers

    answers = asyncio.run(run_hex())
    assert [a.reason for a in answers[:2000]] == ["Unregistered"] * 2000
    assert [a.status for a in answers[2000:]] == [200] * 10


def test_certificate_auth_delivers(clean: Sim) -> None:
    pem = issue_client_cert(clean.tls, TOPIC).read_text()
    app = App(id="a2", name="cert", apns_topic=TOPIC, apns_cert_pem=pem)

    async def run() -> list[ProviderAnswer]:
        sender = ApnsSender(app, settings_for(clean))
        answers = await send_many(sender, [secrets.token_hex(32) for _ in range(3)])
        sender.close()
        return answers

    assert [a.status for a in asyncio.run(run())] == [200, 200, 200]


def test_a_wrong_key_is_refused_with_invalid_provider_token(clean: Sim) -> None:
    app = key_app(clean)
    other = make_apns_key(team_id=app.apns_team_id)
    app.apns_key_pem = other.key_pem  # signed with a key the simulator does not know

    async def run() -> list[ProviderAnswer]:
        sender = ApnsSender(app, settings_for(clean))
        answers = await send_many(sender, [secrets.token_hex(32)])
        sender.close()
        return answers

    [answer] = asyncio.run(run())
    assert (answer.status, answer.reason) == (403, "InvalidProviderToken")


def test_an_unreachable_provider_is_a_transport_failure_not_a_verdict(tmp_path: Path) -> None:
    settings = Settings(apns_host="127.0.0.1", apns_port=free_port(), send_timeout_s=3)
    key = make_apns_key()
    app = App(
        id="a3",
        name="down",
        apns_topic=TOPIC,
        apns_key_pem=key.key_pem,
        apns_key_id=key.key_id,
        apns_team_id=key.team_id,
    )

    async def run() -> ProviderAnswer:
        sender = ApnsSender(app, settings)
        answer = await sender.send(secrets.token_hex(32), _uuid(), build_apns({"alert": {}}))
        sender.close()
        return answer

    answer = asyncio.run(run())
    assert answer.status is None and answer.reason in ("connection", "timeout")


def test_the_provider_token_is_indexed_by_hpack_not_sent_whole_each_time(clean: Sim) -> None:
    async def run() -> tuple[list[int], bool]:
        sender = ApnsSender(key_app(clean), settings_for(clean))
        answers = await send_many(sender, [secrets.token_hex(32) for _ in range(50)])
        [conn] = sender.client.pool.connections
        table = conn.conn.encoder.header_table  # type: ignore[attr-defined]
        indexed = any(name == b"authorization" for name, _ in table.dynamic_entries)
        sender.close()
        return [a.status or 0 for a in answers], indexed

    statuses, indexed = asyncio.run(run())
    assert statuses == [200] * 50  # the simulator still reads the token and accepts it
    assert indexed
