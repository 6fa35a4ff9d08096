"""What the API tells operators about the whole deployment: readiness and the gauges read at
scrape time (queue depth and consumers, the oldest QUEUED Delivery, pauses, schedules,
APNs certificate expiry). Counters come from schemas/metrics.py."""

from __future__ import annotations

import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import datetime, timedelta

import structlog
from cryptography import x509
from prometheus_client import generate_latest
from prometheus_client.core import GaugeMetricFamily
from prometheus_client.registry import Collector, CollectorRegistry
from sqlalchemy import Engine, case, func, or_, select, text
from sqlmodel import Session, col

from producer.messages import as_minute, truncate_minute
from schemas import liveness
from schemas.codes import ENGAGEMENT_ORDER
from schemas.metrics import registry
from schemas.settings import Settings
from schemas.tables import QUEUED, App, Delivery, Message, Schedule, utcnow

log = structlog.get_logger("pushline.telemetry")

PAUSE_PATTERN = "pushline:pause:*"  # worker/ratelimit.py pause_key


@dataclass
class Readiness:
    checks: dict[str, str] = field(default_factory=dict)  # part -> "ok" or what is wrong

    @property
    def ready(self) -> bool:
        return all(v == "ok" for v in self.checks.values())


def readiness(settings: Settings, engine: Engine) -> Readiness:
    """The database answers, Redis answers, and every queue Pushline writes to has a live
    consumer; the scheduler beats."""
    out = Readiness()
    try:
        with engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        out.checks["database"] = "ok"
    except Exception as exc:
        out.checks["database"] = f"unreachable: {type(exc).__name__}"
    try:
        r = liveness.client(settings)
        beats = liveness.live(liveness.read_beats(r, settings), time.time())
        out.checks["redis"] = "ok"
    except Exception as exc:
        out.checks["redis"] = f"unreachable: {type(exc).__name__}"
        return out
    have = liveness.consumed(beats)
    for queue in liveness.expected_queues(settings):
        out.checks[f"queue {queue}"] = (
            "ok" if queue in have else f"no live consumer: start {liveness.HOW_TO_CONSUME[queue]}"
        )
    out.checks["scheduler"] = (
        "ok"
        if any(b.role == "scheduler" for b in beats)
        else "no live scheduler: start pushline scheduler"
    )
    return out


class StateCollector(Collector):
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine

    def collect(self) -> Iterator[GaugeMetricFamily]:
        up = GaugeMetricFamily("pushline_up", "Parts this scrape could read", labels=["part"])
        for part, read in (("redis", self._redis), ("database", self._database)):
            try:
                yield from read()
                up.add_metric([part], 1)
            except Exception as exc:
                log.warning("metrics part unreadable", part=part, error_type=type(exc).__name__)
                up.add_metric([part], 0)
        yield up

    def _redis(self) -> Iterator[GaugeMetricFamily]:
        s, r = self.settings, liveness.client(self.settings)
        depth = GaugeMetricFamily(
            "pushline_queue_depth", "Tasks waiting per queue", labels=["queue"]
        )
        consumers = GaugeMetricFamily(
            "pushline_queue_consumers", "Live worker processes per queue", labels=["queue"]
        )
        beats = liveness.live(liveness.read_beats(r, s), time.time())
        for queue, waiting in queue_depths(s).items():
            depth.add_metric([queue], float(waiting))
            consumers.add_metric([queue], float(sum(queue in b.queues for b in beats)))
        paused = GaugeMetricFamily(
            "pushline_lane_paused", "Provider lanes paused now", labels=["app", "provider"]
        )
        for key in r.scan_iter(s.redis_key_prefix + PAUSE_PATTERN, count=500):
            _, _, app_id, provider = key.decode().rsplit(":", 3)
            paused.add_metric([app_id, provider], 1)
        yield from (depth, consumers, paused)

    def _database(self) -> Iterator[GaugeMetricFamily]:
        now = utcnow()
        with Session(self.engine) as s:
            queued, oldest = s.execute(
                select(func.count(), func.min(col(Delivery.updated_at))).where(
                    col(Delivery.status) == QUEUED
                )
            ).one()
            due = s.execute(
                select(func.count()).where(
                    col(Schedule.state) == "scheduled", col(Schedule.next_run_at) <= now
                )
            ).scalar_one()
            late = s.execute(
                select(func.count()).where(
                    col(Schedule.state) == "scheduled",
                    col(Schedule.next_run_at) <= now - timedelta(seconds=60),
                )
            ).scalar_one()
            certs = s.execute(
                select(col(App.id), col(App.apns_cert_pem)).where(
                    col(App.apns_cert_pem).is_not(None)
                )
            ).all()
        yield _gauge("pushline_deliveries_queued", "Deliveries QUEUED now", queued)
        age = (now - oldest).total_seconds() if isinstance(oldest, datetime) else 0.0
        yield _gauge(
            "pushline_oldest_queued_delivery_age_seconds",
            "Seconds since the longest-waiting QUEUED Delivery was queued or last tried",
            max(0.0, age),
        )
        yield _gauge("pushline_schedules_due", "Schedule runs due now", due)
        yield _gauge("pushline_schedules_late", "Schedule runs due for over a minute", late)
        expiry = GaugeMetricFamily(
            "pushline_apns_certificate_expiry_timestamp_seconds",
            "When each app's APNs certificate expires (Unix time)",
            labels=["app"],
        )
        for app_id, pem in certs:
            try:
                cert = x509.load_pem_x509_certificate(pem.encode())
                expiry.add_metric([app_id], cert.not_valid_after_utc.timestamp())
            except ValueError:
                expiry.add_metric([app_id], 0)  # unreadable: as urgent as expired
        yield expiry


def queue_depths(settings: Settings) -> dict[str, int]:
    """Tasks waiting in each queue Pushline writes to (the lanes and the webhooks)."""
    r = liveness.client(settings)
    return {
        q: int(r.llen(settings.redis_key_prefix + q)) for q in liveness.expected_queues(settings)
    }


HOUR_MINUTES = 60
#: (lane, minute queued, minute final or None while QUEUED, sent or not, how many)
HourRow = tuple[str, datetime, datetime | None, bool, int]


def last_hour(engine: Engine, app_id: str | None, now: datetime | None = None) -> HourSeries:
    """Deliveries QUEUED per lane at each minute's end, and sent per minute, over the last
    hour: one grouped query over what is QUEUED now or changed within the hour, every
    app's for `app_id` None. No index serves "changed within the hour" (one on updated_at
    would cost every recorded outcome a write), so this reads the Deliveries table: it is
    for the console's few reads a minute, not for scrapes."""
    now = now or utcnow()
    start = now.replace(second=0, microsecond=0) - timedelta(minutes=HOUR_MINUTES - 1)
    d = Delivery
    sent = col(d.status).in_([s.value for s in ENGAGEMENT_ORDER])
    queued = col(d.status) == QUEUED
    final_at = case(
        (queued, None),
        (sent, func.coalesce(col(d.sent_at), col(d.updated_at))),
        else_=col(d.updated_at),
    )
    sent_flag = case((sent, 1), else_=0)
    q_min, f_min = truncate_minute(col(d.created_at)), truncate_minute(final_at)
    q = (
        select(col(Message.lane), q_min, f_min, sent_flag, func.count())
        .join(Message, col(Message.id) == col(d.message_id))
        .where(or_(queued, col(d.updated_at) >= start))
        .group_by(col(Message.lane), q_min, f_min, sent_flag)
    )
    if app_id is not None:
        q = q.where(col(d.app_id) == app_id)
    with Session(engine) as s:
        rows = s.execute(q).all()
    found: list[HourRow] = [
        (lane, as_minute(at), as_minute(end) if end is not None else None, bool(was), int(n))
        for lane, at, end, was, n in rows
        if at is not None
    ]
    return hour_series(found, start)


@dataclass(frozen=True)
class HourSeries:
    minutes: list[datetime]
    queued: dict[str, list[int]]  # lane -> QUEUED at each minute's end
    sent: list[int]


def hour_series(rows: list[HourRow], start: datetime) -> HourSeries:
    """The minute-by-minute series from grouped rows; `start` is the first minute (UTC)."""
    minutes = [start + timedelta(minutes=i) for i in range(HOUR_MINUTES)]
    queued: dict[str, list[int]] = {"priority": [0] * HOUR_MINUTES, "bulk": [0] * HOUR_MINUTES}
    sent = [0] * HOUR_MINUTES
    for lane, at, end, was_sent, n in rows:
        line = queued.setdefault(lane, [0] * HOUR_MINUTES)
        for i, minute in enumerate(minutes):
            if at <= minute and (end is None or end > minute):
                line[i] += n
        if was_sent and end is not None and start <= end:
            i = int((end - start).total_seconds() // 60)
            if i < HOUR_MINUTES:
                sent[i] += n
    return HourSeries(minutes, queued, sent)


def _gauge(name: str, doc: str, value: float) -> GaugeMetricFamily:
    return GaugeMetricFamily(name, doc, value=float(value))


def exposition(settings: Settings, engine: Engine) -> bytes:
    """Every process's counters (multiprocess mode) followed by the scraped gauges."""
    state = CollectorRegistry(auto_describe=False)
    state.register(StateCollector(settings, engine))
    return bytes(generate_latest(registry())) + bytes(generate_latest(state))
