"""Prometheus series every Pushline process exports, in one place (names are documented in
the README and read by deploy/grafana/pushline.json).

Counters and histograms live in prometheus-client's multiprocess mode whenever
PROMETHEUS_MULTIPROC_DIR is set (`pushline api` and `pushline worker` set it up), so the
prefork children of a worker and the processes of `pushline api --workers N` add up in one
scrape. Gauges that describe shared state (queue depth, oldest QUEUED Delivery, pauses,
schedules, certificates) are read at scrape time by `schemas.metrics_collect`, not counted.

No label carries a token, a key or a user name: apps are labelled by id.
"""

from __future__ import annotations

import os

from prometheus_client import CollectorRegistry, Counter, Histogram, disable_created_metrics, values
from prometheus_client import multiprocess as mp

from schemas import process
from schemas.metricsdir import MULTIPROC_ENV

if os.environ.get(MULTIPROC_ENV):
    # prometheus-client asks getpid, a system call, at every inc and observe to notice a
    # fork (a dozen times per push between the API and the worker); the kept id notices
    # the same forks, so each child still writes its own file.
    values.ValueClass = values.MultiProcessValue(process.pid)

# The same series whether one process or many serve them (multiprocess mode has no
# `_created`).
disable_created_metrics()

LATENCY_BUCKETS = (0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0)

HTTP_REQUESTS = Counter(
    "pushline_http_requests_total", "API requests answered", ["method", "route", "status"]
)
HTTP_LATENCY = Histogram(
    "pushline_http_request_duration_seconds",
    "API request latency, from the first byte in to the answer",
    ["method", "route"],
    buckets=LATENCY_BUCKETS,
)
MESSAGES_ACCEPTED = Counter(
    "pushline_messages_accepted_total", "Messages accepted", ["app", "target", "lane"]
)
DELIVERIES = Counter(
    "pushline_deliveries_total",
    "Deliveries that reached a final state",
    ["provider", "status", "code"],
)
RETRIES = Counter(
    "pushline_delivery_retries_total", "Delivery attempts to be tried again", ["provider", "code"]
)
PROVIDER_LATENCY = Histogram(
    "pushline_provider_request_duration_seconds",
    "Provider request latency (one notification sent to its answer)",
    ["provider"],
    buckets=LATENCY_BUCKETS,
)
RATE_LIMIT_WAITS = Counter(
    "pushline_rate_limit_waits_total",
    "Times a lane waited for its provider rate limit or a pause",
    ["app", "provider"],
)
WEBHOOK_ATTEMPTS = Counter(
    "pushline_webhook_attempts_total", "Webhook POSTs by outcome", ["outcome"]
)
SCHEDULE_RUNS = Counter("pushline_schedule_runs_total", "Schedule runs published")
RECOVERED = Counter(
    "pushline_recovered_total",
    "Work re-enqueued after the broker or a stopped worker lost it",
    ["kind"],  # fanout, delivery (rows), task (a stopped worker's unacknowledged tasks)
)
BROKER_RESETS = Counter(
    "pushline_broker_resets_total", "Times the scheduler saw Redis lose its contents"
)

# Series computed at scrape time (schemas/metrics_collect.py); listed here so the README
# and the dashboard test know every name.
SCRAPED = (
    "pushline_queue_depth",
    "pushline_queue_consumers",
    "pushline_oldest_queued_delivery_age_seconds",
    "pushline_deliveries_queued",
    "pushline_lane_paused",
    "pushline_schedules_due",
    "pushline_schedules_late",
    "pushline_apns_certificate_expiry_timestamp_seconds",
    "pushline_up",
)


def registry() -> CollectorRegistry:
    """The registry to serve: every process's values in multiprocess mode, else this one's."""
    if os.environ.get(MULTIPROC_ENV):
        reg = CollectorRegistry()
        mp.MultiProcessCollector(reg)
        return reg
    from prometheus_client import REGISTRY

    return REGISTRY


def process_exited(pid: int) -> None:
    if os.environ.get(MULTIPROC_ENV):
        mp.mark_process_dead(pid)
