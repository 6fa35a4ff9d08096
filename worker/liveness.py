"""A worker's or the scheduler's own liveness: its heartbeat in Redis, and /health and
/metrics on PUSHLINE_METRICS_PORT; a lease holder's beat; and the scheduler's watch on
the broker and on the processes that hold work."""

from __future__ import annotations

import contextlib
import json
import socket
import threading
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from datetime import datetime
from socketserver import ThreadingMixIn
from typing import Any
from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

import redis
import structlog
from prometheus_client import make_wsgi_app

from schemas import liveness, process
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
        """Stop beating and take the beat away (a clean stop: nothing is left to recover)."""
        self._stop.set()
        me = liveness.process_beat(self.role, self.name, self.queues)
        with contextlib.suppress(Exception):
            liveness.forget_beat(liveness.client(self.settings), self.settings, me)

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
        return self.lost_wall

    def recovered(self) -> None:
        """The loss was swept; a failed sweep leaves it due, to be tried again next tick."""
        self.lost_at = None


class _HolderBeat:
    """Beats for this process under the name its leases carry, on a daemon thread."""

    def __init__(self, settings: Settings, holder: str) -> None:
        self.settings, self.holder = settings, holder
        self.redis = liveness.client(settings)

    def start(self) -> None:
        self._beat()  # before the first lease is taken: a holder never seen is never judged
        threading.Thread(target=self._run, name="pushline-holder-beat", daemon=True).start()

    def _beat(self) -> None:
        with contextlib.suppress(Exception):  # Redis away: its leases run out, as before
            liveness.holder_beat(self.redis, self.settings, self.holder, time.time())

    def _run(self) -> None:
        while True:
            time.sleep(liveness.BEAT_EVERY_S)
            self._beat()


_HOST = socket.gethostname()
_holders: dict[int, _HolderBeat] = {}  # by pid: a forked child beats for itself


def worker_name() -> str:
    """Host and process, as kept in each attempt and each lease (a prefork child has its
    own pid)."""
    return f"{_HOST}:{process.pid()}"


def holding(settings: Settings) -> str:
    """This process's name as a lease holder, once it beats under it."""
    pid = process.pid()
    beat = _holders.get(pid)
    if beat is None:
        beat = _holders[pid] = _HolderBeat(settings, worker_name())
        beat.start()
    return beat.holder


def done_holding() -> None:
    """This process stops cleanly, its tasks finished: it holds no lease to release."""
    beat = _holders.pop(process.pid(), None)
    if beat is not None:
        with contextlib.suppress(Exception):
            liveness.forget_holders(beat.redis, beat.settings, [beat.holder])


@dataclass
class Losses:
    holders: dict[str, float] = field(default_factory=dict)  # gone silent: their last beat
    restore_before: float | None = None  # hand out again tasks taken before (Unix time)
    queues: frozenset[str] = frozenset()  # from these queues: the ones the dead consumed


class ProcessWatch:
    """The scheduler's view of the processes holding work: lease holders gone silent,
    and worker processes gone silent or replaced under their name (a restart). Each loss
    is reported once."""

    def __init__(self, settings: Settings) -> None:
        self.settings = settings
        self.redis = liveness.client(settings)
        self._holder_suspects: dict[str, float] = {}
        self._worker_suspects: dict[str, float] = {}
        self._workers: dict[str, liveness.Beat] = {}
        self._gone: set[tuple[str, int, str]] = set()

    def look(self) -> Losses:
        """What was lost since the last look; nothing while Redis does not answer (and the
        silences seen before it are looked at afresh: live processes beat again)."""
        try:
            return self._look()
        except redis.RedisError:
            self._holder_suspects.clear()
            self._worker_suspects.clear()
            return Losses()

    def _look(self) -> Losses:
        now, mono = time.time(), time.monotonic()
        holders = liveness.read_holders(self.redis, self.settings)
        dead, self._holder_suspects = liveness.confirm_silence(
            self._holder_suspects, liveness.silent(holders, now), mono
        )
        beats = liveness.read_beats(self.redis, self.settings, now)
        beats = [b for b in beats if b.role == "worker"]
        current = {b.name: b for b in beats}
        quiet = {b.name: b.at for b in beats if _key(b) not in self._gone}
        stopped, self._worker_suspects = liveness.confirm_silence(
            self._worker_suspects, liveness.silent(quiet, now), mono
        )
        gone = [
            b
            for b in [*liveness.replaced(self._workers, beats), *(current[n] for n in stopped)]
            if _key(b) not in self._gone
            and not liveness.stopped_cleanly(self.redis, self.settings, b)
        ]
        self._workers = current
        self._gone |= {_key(b) for b in gone}
        # A process may take a task up to its next beat, whenever it died within that time.
        before = max((b.at + 2 * liveness.BEAT_EVERY_S for b in gone), default=None)
        queues = frozenset(q for b in gone for q in b.queues)
        silent_holders = {name: holders[name] for name in dead}
        return Losses(silent_holders, None if before is None else min(before, now), queues)

    def forget(self, holders: Iterable[str]) -> None:
        """The holders whose leases were released: no need to judge them again."""
        liveness.forget_holders(self.redis, self.settings, holders)


def _key(b: liveness.Beat) -> tuple[str, int, str]:
    return (b.name, b.pid, b.host)
