"""A worker's or the scheduler's own liveness: its heartbeat in Redis, and /health and
/metrics on PUSHLINE_METRICS_PORT."""

from __future__ import annotations

import json
import threading
import time
from collections.abc import Callable, Iterable
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import structlog
from prometheus_client import make_wsgi_app

from schemas import liveness
from schemas.metrics import BROKER_RESETS, registry
from schemas.settings import Settings
from schemas.tables import utcnow

log = structlog.get_logger("pushline.liveness")

Health = Callable[[], dict[str, Any]]


class Heartbeat:
    """Beats every few seconds on a daemon thread; a Redis outage is logged once, not per
    beat, and beating resumes by itself."""

    def __init__(
        self, settings: Settings, role: str, name: str, queues: Iterable[str] = ()
    ) -> None:
        self.settings = settings
        self.role, self.name, self.queues = role, name, tuple(queues)
        self.last_ok = 0.0
        self._stop = threading.Event()
        self._failing = False

    def start(self) -> Heartbeat:
        threading.Thread(target=self._run, name="pushline-heartbeat", daemon=True).start()
        return self

    def stop(self) -> None:
        self._stop.set()

    def health(self) -> dict[str, Any]:
        fresh = time.time() - self.last_ok <= liveness.STALE_AFTER_S
        return {
            "status": "ok" if fresh else "failing",
            "role": self.role,
            "name": self.name,
            "queues": list(self.queues),
            "last_heartbeat_s_ago": round(time.time() - self.last_ok, 1),
        }

    def _run(self) -> None:
        r = liveness.client(self.settings)
        while not self._stop.is_set():
            try:
                beat = liveness.process_beat(self.role, self.name, self.queues)
                liveness.beat(r, self.settings, beat)
                self.last_ok = time.time()
                if self._failing:
                    log.info("heartbeat restored", name=self.name)
                self._failing = False
            except Exception as exc:
                if not self._failing:
                    log.warning("heartbeat failed", name=self.name, error_type=type(exc).__name__)
                self._failing = True
            self._stop.wait(liveness.BEAT_EVERY_S)


class _Server(ThreadingMixIn, WSGIServer):
    daemon_threads = True


class _QuietHandler(WSGIRequestHandler):
    def log_message(self, *_: Any) -> None:  # scrapes are not news
        pass


def serve(port: int, health: Health) -> None:
    """/metrics (this process tree's counters) and /health on a daemon thread."""
    metrics = make_wsgi_app(registry())

    def app(environ: dict[str, Any], start_response: Callable[..., Any]) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == "/health":
            body = health()
            code = "200 OK" if body.get("status") == "ok" else "503 Service Unavailable"
            start_response(code, [("Content-Type", "application/json")])
            return [json.dumps(body).encode()]
        return list(metrics(environ, start_response))

    server = make_server("0.0.0.0", port, app, _Server, handler_class=_QuietHandler)
    threading.Thread(target=server.serve_forever, name="pushline-metrics", daemon=True).start()
    log.info("metrics and health served", port=port)


class BrokerWatch:
    """The scheduler's view of the broker: whether Redis lost its contents since the last
    look (its epoch changed), and which queues live workers read."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = liveness.client(settings)
        self.epoch: str | None = None
        self.lost_at: float | None = None  # monotonic time a loss was seen, until recovered
        self.lost_wall: datetime | None = None  # the same instant on the store's clock
        self._down = False

    def look(self) -> None:
        try:
            epoch = liveness.current_epoch(self.redis, self.settings)
        except Exception as exc:
            if not self._down:
                log.warning("broker unreachable", error_type=type(exc).__name__)
            self._down = True
            return
        if self._down:
            log.info("broker reachable again")
        self._down = False
        if self.epoch is not None and epoch != self.epoch:
            log.warning("the broker lost its contents: recovering its work without a grace")
            BROKER_RESETS.inc()
            self.lost_at, self.lost_wall = time.monotonic(), utcnow()
        self.epoch = epoch

    def consumed(self) -> set[str] | None:
        """Queues with a live consumer; None when Redis cannot tell."""
        try:
            beats = liveness.read_beats(self.redis, self.settings)
        except Exception:
            return None
        return liveness.consumed(liveness.live(beats, time.time()))

    def recovery_due(self) -> datetime | None:
        """When the broker lost its contents, once it is time to recover: when the workers
        beat again (they re-beat within BEAT_EVERY_S), or after two beats' time whatever
        they say."""
        if self.lost_at is None:
            return None
        waited = time.monotonic() - self.lost_at
        have = self.consumed() or set()
        if (
            waited < 2 * liveness.BEAT_EVERY_S
            and not set(liveness.expected_queues(self.settings)) <= have
        ):
            return None
        self.lost_at = None
        return self.lost_wall
