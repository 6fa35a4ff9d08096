"""End-to-end delivery throughput, with its two references (DESIGN.md §5).

    python -m bench.throughput [--devices N] [--repeat K] [--database URL] [--redis URL]
    python -m bench.throughput --quick      # 2,000 devices, one repeat: a smoke run
    python -m bench.throughput --wait-quiet 120   # on a shared machine: hold runs for quiet

For each scenario (all APNs, all FCM, half and half, all Web Push): a fresh Redis db and
database, a Stack (API, worker with concurrency 2) whose providers are the minimal fake
provider (bench/fakeprovider.py: HTTP/2 over TLS, answers 200, checks nothing; Web Push
subscriptions have their endpoints there), N registrations
written in bulk, one broadcast through the API, timed from its 202 to the last Delivery
recorded SENT, with the CPU each process spent per notification. Beside it, in the same run:
the bare clients' ceiling and the naive baseline (one Celery task per device), both against
the same fake, both steady-state rates measured on fewer sends (see
bench/references.py). Reports medians of K repeats, the share of the CPUs other processes
took during each run, and the targets.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
from rich.console import Console
from rich.table import Table
from sqlalchemy import func, make_url, select
from sqlmodel import Session, col

from bench.infra import (
    CpuMeter,
    ForeignLoad,
    RssSampler,
    database_name,
    flush_redis,
    naive_redis_url,
    named_pids,
    register_devices,
    reset_database,
    start_fake,
    stop_on_sigterm,
    tree_pids,
    truncate_messages,
    webpush_keys,
)
from bench.references import (
    NAIVE_BUDGET_S,
    REPO,
    NaiveWorker,
    RefRun,
    ceiling_tokens,
    measure_bare,
    measure_naive,
    naive_credentials,
    warm_naive,
)
from producer.accept import parse_push
from producer.stack import Credentials, Stack
from schemas.db import engine_for, normalise_url
from schemas.tables import App, Delivery, Message

BROADCAST: dict[str, Any] = {
    "target": {"type": "application"},
    "payload": {"alert": {"title": "t", "body": "b"}},
}
DEFAULT_DATABASE = "postgresql://postgres@127.0.0.1:5432/pushline_bench"
DEFAULT_REDIS = "redis://127.0.0.1:6379/5"
NAIVE_MAX_DEVICES = 2000
POLL_S = 0.1
TARGET_APNS = 1000.0
TARGET_MIXED = 600.0
TARGET_NAIVE_RATIO = 5.0
TARGET_APNS_CEILING = 0.75  # of the bare aioapns loop
TARGET_FCM_CEILING = 1.2  # of the bare firebase-admin send_each_async loop
TARGET_APNS_CPU_US = 300.0  # API + worker + PostgreSQL per APNs notification
FOREIGN_WARN = 0.10  # other processes using more than this share of the machine

console = Console(width=110)


@dataclass(frozen=True)
class Scenario:
    key: str
    title: str
    apns_share: float  # of the devices; the rest go through `rest`
    rest: str = "fcm"

    def counts(self, n: int) -> dict[str, int]:
        apns = round(n * self.apns_share)
        return {p: c for p, c in (("apns", apns), (self.rest, n - apns)) if c}


SCENARIOS = (
    Scenario("apns", "all APNs", 1.0),
    Scenario("fcm", "all FCM", 0.0),
    Scenario("mixed", "half APNs, half FCM", 0.5),
    Scenario("webpush", "all Web Push", 0.0, rest="webpush"),
)


@dataclass(frozen=True)
class PushlineRun:
    rate: float
    elapsed_s: float
    sent: int
    peak_mib: float
    warning: str | None = None
    foreign: float = 0.0
    cpu_us: dict[str, float] = field(default_factory=dict)  # per notification, per process group


@dataclass
class ScenarioResult:
    scenario: Scenario
    devices: int
    naive_devices: int
    pushline: list[PushlineRun] = field(default_factory=list)
    ceiling: list[RefRun] = field(default_factory=list)
    naive: list[RefRun] = field(default_factory=list)

    def median(self, runs: list[Any], attr: str = "rate") -> float:
        return statistics.median(getattr(r, attr) for r in runs) if runs else float("nan")

    def max_foreign(self) -> float:
        shares = [r.foreign for r in self.pushline] + [r.foreign for r in self.ceiling + self.naive]
        return max(shares, default=0.0)


# --- one Pushline run ----------------------------------------------------------------------


def _aware(ts: datetime) -> datetime:
    return ts if ts.tzinfo else ts.replace(tzinfo=UTC)  # SQLite hands back naive UTC


def run_pushline(
    stack: Stack,
    creds: Credentials,
    counts: dict[str, int],
    ours: Callable[[], set[int]],
    meter: CpuMeter,
) -> PushlineRun:
    assert stack.database_url
    n = sum(counts.values())
    stack.apns.reset()
    stack.fcm.reset()
    stack.webpush.reset()
    warnings: list[str] = []
    timeout_s = max(120.0, n / 50)
    with (
        meter,
        ForeignLoad(ours, database_name(stack.database_url)) as foreign,
        RssSampler(stack.procs["worker"].pid) as rss,
        httpx.Client(
            base_url=stack.api_url, headers={"X-API-Key": creds.api_key}, timeout=30
        ) as http,
    ):
        resp = http.post("/v1/messages", json=BROADCAST)
        accepted_at = time.time()  # wall clock: the worker stamps Deliveries with it too
        if resp.status_code != 202:
            raise RuntimeError(f"broadcast answered {resp.status_code}: {resp.text[:300]}")
        message_id = resp.json()["id"]
        deadline = time.monotonic() + timeout_s
        state = ""
        # The Message's own row, not GET /v1/messages/{id}: its counts by status and code
        # read every Delivery, and ten of those a second would be the benchmark's own
        # PostgreSQL CPU, counted as Pushline's.
        with engine_for(stack.database_url).connect() as poll:
            while time.monotonic() < deadline:
                state = poll.execute(
                    select(col(Message.state)).where(col(Message.id) == message_id)
                ).scalar_one()
                poll.rollback()
                if state in ("done", "failed"):
                    break
                time.sleep(POLL_S)
        if state != "done":
            warnings.append(f"message {message_id} ended {state!r}, not 'done'")
    with Session(engine_for(stack.database_url)) as s:
        sent, last_sent = s.execute(
            select(func.count(), func.max(col(Delivery.updated_at))).where(
                col(Delivery.message_id) == message_id, col(Delivery.status) == "SENT"
            )
        ).one()
        completed = s.get(Message, message_id)
    end = _aware(last_sent) if last_sent else datetime.now(UTC)
    elapsed = end.timestamp() - accepted_at
    if sent != n:
        warnings.append(f"{sent} of {n} Deliveries SENT")
    if completed is not None and completed.completed_at and last_sent:
        lag = _aware(completed.completed_at).timestamp() - end.timestamp()
        if lag > 1.0:
            warnings.append(f"message completed {lag:.1f}s after its last SENT Delivery")
    return PushlineRun(
        sent / elapsed,
        elapsed,
        sent,
        rss.peak_mib,
        "; ".join(warnings) or None,
        foreign.share,
        {k: v * 1e6 / max(1, sent) for k, v in meter.spent.items()},
    )


# --- one scenario --------------------------------------------------------------------------


def run_scenario(scenario: Scenario, args: argparse.Namespace, state_dir: Path) -> ScenarioResult:
    n = args.devices
    naive_n = min(n, NAIVE_MAX_DEVICES)
    result = ScenarioResult(scenario, n, naive_n)
    counts = scenario.counts(n)
    # Each scenario gets a fresh broker db and database, so each needs a fresh Stack: a
    # FLUSHDB under a running API would drop kombu's queue bindings and lose tasks.
    flush_redis(args.redis)
    reset_database(args.database)
    here = state_dir / scenario.key
    here.mkdir(parents=True, exist_ok=True)
    fake, port = start_fake(here / "tls", here / "fake.log")
    fcm_url = f"https://127.0.0.1:{port}/v1/projects/{{0}}/messages:send"
    stack = Stack(
        state_dir=here,
        redis_url=args.redis,
        database_url=args.database,
        worker_concurrency=2,
        # Pushline and the ceiling both send to the minimal fake; the OAuth token still
        # comes from the FCM simulator (the service account's token_uri).
        extra_env={"PUSHLINE_APNS_PORT": str(port), "PUSHLINE_FCM_URL": fcm_url},
    )
    naive = None
    try:
        stack.start()
        creds = stack.add_app(f"bench-{scenario.key}")
        origin = f"https://127.0.0.1:{port}"  # Web Push endpoints: the fake's
        tokens = register_devices(args.database, creds.app_id, counts, webpush_origin=origin)
        with Session(engine_for(args.database)) as s:
            app = s.get(App, creds.app_id)
        assert app is not None
        payload = parse_push(BROADCAST).payload.model_dump(exclude_none=True)
        naive_tokens = {p: t[: round(naive_n * len(t) / n)] for p, t in tokens.items()}
        naive_jobs = _interleave(naive_tokens)
        ref_tokens = ceiling_tokens(tokens)
        naive = NaiveWorker(
            stack, naive_redis_url(args.redis), state_dir / scenario.key / "naive-worker.log"
        )

        def ours() -> set[int]:
            pids = {os.getpid(), fake.pid}
            for proc in [*stack.procs.values(), *([naive.proc] if naive and naive.proc else [])]:
                pids |= tree_pids(proc.pid)
            return pids

        def reference(label: str, rep: int, measure: Callable[[], RefRun]) -> RefRun:
            """One reference run, held for quiet and charged with other processes' CPU."""
            wait_quiet(ours, args)
            cpu = time.process_time()
            with ForeignLoad(ours, database_name(args.database)) as fl:
                ref = measure()
            cpu_us = (time.process_time() - cpu) / max(1, ref.sent) * 1e6
            ref = dataclasses.replace(ref, foreign=fl.share, cpu_us=cpu_us)
            _progress(
                scenario,
                rep,
                f"{label} ({ref.sent:,})",
                ref.rate,
                ref.elapsed_s,
                ref.foreign,
                ref.warning,
            )
            return ref

        naive.start()
        web_keys = webpush_keys()
        ncreds = {
            **naive_credentials(app),
            "webpush_p256dh": web_keys[0],
            "webpush_auth": web_keys[1],
        }
        warm_naive(naive, ncreds, naive_jobs[:4], payload)
        # Interleaved per repeat, so slow drift of the machine hits all three alike.
        for rep in range(args.repeat):
            if rep:
                truncate_messages(args.database)
            wait_quiet(ours, args)
            meter = CpuMeter(
                {
                    "API": lambda: tree_pids(stack.procs["api"].pid),
                    "worker": lambda: tree_pids(stack.procs["worker"].pid),
                    "PostgreSQL": lambda: named_pids("postgres"),
                    "Redis": lambda: named_pids("redis-server"),
                }
            )
            run = run_pushline(stack, creds, counts, ours, meter)
            result.pushline.append(run)
            _progress(
                scenario,
                rep,
                f"pushline ({run.sent:,})",
                run.rate,
                run.elapsed_s,
                run.foreign,
                run.warning,
                f"peak {run.peak_mib:.0f} MiB",
            )
            result.ceiling.append(
                reference(
                    "ceiling",
                    rep,
                    lambda: measure_bare(
                        app, ref_tokens, port, here / "tls" / "ca.pem", fcm_url, web_keys
                    ),
                )
            )
            if rep < args.naive_repeat:
                result.naive.append(
                    reference(
                        "naive", rep, lambda: measure_naive(naive, ncreds, naive_jobs, payload)
                    )
                )
    finally:
        if naive is not None:
            naive.stop()
        stack.stop()
        fake.terminate()
        fake.wait(timeout=10)
    return result


def wait_quiet(ours: Callable[[], set[int]], args: argparse.Namespace) -> None:
    """With --wait-quiet, hold each run until other processes leave the machine alone."""
    started = time.monotonic()
    said = False
    while time.monotonic() - started < args.wait_quiet:
        with ForeignLoad(ours, database_name(args.database)) as probe:
            time.sleep(1.0)
        if probe.share <= FOREIGN_WARN / 2:
            break
        if not said:
            console.print(f"  (waiting: other processes use {probe.share:.0%} of the machine)")
            said = True
        time.sleep(2.0)
    if said:
        waited = time.monotonic() - started
        args.waited_s += waited
        console.print(f"  (waited {waited:.0f}s)")


def _interleave(tokens: dict[str, list[str]]) -> list[tuple[str, str]]:
    lists = [[(p, t) for t in ts] for p, ts in tokens.items()]
    out: list[tuple[str, str]] = []
    for i in range(max((len(x) for x in lists), default=0)):
        out.extend(x[i] for x in lists if i < len(x))
    return out


def _progress(
    scenario: Scenario,
    rep: int,
    what: str,
    rate: float,
    elapsed: float,
    foreign: float,
    warning: str | None,
    extra: str = "",
) -> None:
    console.print(
        f"  {scenario.title} #{rep + 1} {what}: {rate:,.0f}/s in {elapsed:.2f}s {extra}".rstrip()
        + f"  (other processes: {foreign:.0%} CPU)"
    )
    if foreign > FOREIGN_WARN:
        console.print(
            f"  [bold red]WARNING[/] {scenario.title} #{rep + 1} {what}: other "
            f"processes used {foreign:.0%} of the machine; this run is disturbed"
        )
    if warning:
        console.print(f"  [bold red]WARNING[/] {scenario.title} #{rep + 1} {what}: {warning}")


# --- report --------------------------------------------------------------------------------


def _runs(values: list[float], fmt: str = "{:,.0f}") -> str:
    return "  ".join(fmt.format(v) for v in values)


def scenario_table(r: ScenarioResult) -> Table:
    pl = r.median(r.pushline)
    ceil, naive = r.median(r.ceiling), r.median(r.naive)
    t = Table(
        title=f"{r.scenario.title} — {r.devices:,} devices, medians of {len(r.pushline)}",
        title_justify="left",
    )
    t.add_column("measure")
    t.add_column("median", justify="right")
    t.add_column("Pushline ÷", justify="right")
    t.add_column("runs", justify="right")
    t.add_row(
        "Pushline end to end (notifications/s)",
        f"{pl:,.0f}",
        "",
        _runs([x.rate for x in r.pushline]),
    )
    t.add_row(
        "Pushline worker peak RSS (MiB)",
        f"{r.median(r.pushline, 'peak_mib'):,.0f}",
        "",
        _runs([x.peak_mib for x in r.pushline]),
    )
    for group in r.pushline[0].cpu_us if r.pushline else ():
        values = [x.cpu_us[group] for x in r.pushline]
        t.add_row(
            f"CPU µs per notification: {group}",
            f"{statistics.median(values):,.0f}",
            "",
            _runs(values),
        )
    t.add_row(
        f"ceiling: bare clients vs the minimal fake, {_sizes(r.ceiling)} (notifications/s)",
        f"{ceil:,.0f}",
        f"{pl / ceil:.2f}",
        _runs([x.rate for x in r.ceiling]),
    )
    bare_cpu = [x.cpu_us for x in r.ceiling if x.cpu_us is not None]
    if bare_cpu:
        # The same machine's price of one notification with no queue and no store: what
        # Pushline's CPU per notification is best read against on another machine.
        t.add_row(
            "ceiling: the bare clients' own CPU µs per notification",
            f"{statistics.median(bare_cpu):,.0f}",
            "",
            _runs(bare_cpu),
        )
    t.add_row(
        f"naive: a task per device, {_sizes(r.naive)} (notifications/s)",
        f"{naive:,.0f}",
        f"{pl / naive:.1f}×",
        _runs([x.rate for x in r.naive]),
    )
    t.add_row("other processes' CPU share (worst run)", f"{r.max_foreign():.0%}", "", "")
    return t


def _sizes(runs: list[RefRun]) -> str:
    sizes = sorted({x.sent for x in runs})
    return "n=" + "/".join(f"{s:,}" for s in sizes)


def verdicts(results: list[ScenarioResult]) -> list[tuple[str, bool]]:
    out = []
    for r in results:
        pl = r.median(r.pushline)
        if r.scenario.key == "apns":
            out.append((f"all APNs ≥ {TARGET_APNS:,.0f}/s: {pl:,.0f}/s", pl >= TARGET_APNS))
        if r.scenario.key == "mixed":
            out.append((f"half and half ≥ {TARGET_MIXED:,.0f}/s: {pl:,.0f}/s", pl >= TARGET_MIXED))
        if r.scenario.key in ("apns", "fcm"):
            want = TARGET_APNS_CEILING if r.scenario.key == "apns" else TARGET_FCM_CEILING
            of_ceiling = pl / r.median(r.ceiling)
            out.append(
                (
                    f"{r.scenario.title} ≥ {want:.2f}× the bare client: {of_ceiling:.2f}×",
                    of_ceiling >= want,
                )
            )
        if r.scenario.key == "apns" and r.pushline:
            cpu = statistics.median(
                sum(x.cpu_us.get(g, 0.0) for g in ("API", "worker", "PostgreSQL"))
                for x in r.pushline
            )
            out.append(
                (
                    f"APNs CPU (API + worker + PostgreSQL) ≤ {TARGET_APNS_CPU_US:.0f} µs: "
                    f"{cpu:,.0f} µs",
                    cpu <= TARGET_APNS_CPU_US,
                )
            )
        ratio = pl / r.median(r.naive)
        out.append(
            (
                f"{r.scenario.title} ≥ {TARGET_NAIVE_RATIO:.0f}× naive: {ratio:.1f}×",
                ratio >= TARGET_NAIVE_RATIO,
            )
        )
    return out


# --- command line --------------------------------------------------------------------------


def parse_args(argv: list[str] | None) -> argparse.Namespace:
    p = argparse.ArgumentParser(
        prog="python -m bench.throughput",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    p.add_argument("--devices", type=int, default=20000, help="devices per scenario (20000)")
    p.add_argument("--repeat", type=int, default=3, help="runs per measure; medians (3)")
    p.add_argument(
        "--naive-repeat", type=int, default=None, help="naive runs per scenario (default: --repeat)"
    )
    p.add_argument(
        "--database",
        default=DEFAULT_DATABASE,
        help="database to drop and recreate (created when absent)",
    )
    p.add_argument(
        "--redis",
        default=DEFAULT_REDIS,
        help="Redis db to flush and use; the naive baseline uses the next db",
    )
    p.add_argument(
        "--scenarios",
        default=",".join(s.key for s in SCENARIOS),
        help="comma-separated subset of apns,fcm,mixed,webpush",
    )
    p.add_argument("--quick", action="store_true", help="2,000 devices, one repeat")
    p.add_argument(
        "--wait-quiet",
        type=float,
        default=0.0,
        metavar="SECONDS",
        help="before each run, wait up to this long for other processes to "
        "leave the CPUs alone (default 0: measure at once, flag disturbance)",
    )
    args = p.parse_args(argv)
    if args.quick:
        args.devices, args.repeat = 2000, 1
    if args.naive_repeat is None:
        args.naive_repeat = args.repeat
    args.naive_repeat = max(1, min(args.naive_repeat, args.repeat))
    wanted = set(args.scenarios.split(","))
    unknown = wanted - {s.key for s in SCENARIOS}
    if unknown:
        p.error(f"unknown scenarios {sorted(unknown)}")
    args.scenario_list = [s for s in SCENARIOS if s.key in wanted]
    args.waited_s = 0.0
    return args


def code_version() -> str:
    """The commit measured, and whether the working tree differs from it (it often does)."""
    try:
        head = subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "status", "--porcelain", "--untracked-files=no"],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=10,
        ).stdout
    except (OSError, subprocess.SubprocessError):
        return "unknown"
    changed = len(dirty.splitlines())
    return f"{head or 'unknown'}" + (f" + {changed} modified files" if changed else "")


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    stop_on_sigterm()
    state_dir = Path(tempfile.mkdtemp(prefix="pushline-bench-"))
    db_shown = make_url(normalise_url(args.database)).render_as_string(hide_password=True)
    console.print(
        f"Pushline throughput: {args.devices:,} devices × {len(args.scenario_list)} scenarios × "
        f"{args.repeat} repeats (naive: up to {min(args.devices, NAIVE_MAX_DEVICES):,} devices or "
        f"{NAIVE_BUDGET_S:.0f}s × {args.naive_repeat})\n  database {db_shown}, redis {args.redis} "
        f"(naive {naive_redis_url(args.redis)}), logs in {state_dir}\n"
        f"  code {code_version()}, {os.cpu_count()} CPUs, Python {sys.version.split()[0]}"
    )
    started = time.monotonic()
    results = []
    for scenario in args.scenario_list:
        console.print(f"[bold]{scenario.title}[/]")
        results.append(run_scenario(scenario, args, state_dir))
    console.print()
    for r in results:
        console.print(scenario_table(r))
    console.print("[bold]Targets[/] (medians)")
    for text, ok in verdicts(results):
        console.print(f"  {'[green]PASS[/]' if ok else '[bold red]FAIL[/]'}  {text}")
    disturbed = [r.scenario.title for r in results if r.max_foreign() > FOREIGN_WARN]
    if disturbed:
        console.print(f"[bold red]Disturbed by other processes:[/] {', '.join(disturbed)}")
    console.print(
        f"total wall time {time.monotonic() - started:.0f}s (of which waiting for a "
        f"quiet machine {args.waited_s:.0f}s); logs in {state_dir}"
    )
    return 0


if __name__ == "__main__":
    sys.exit(main())
