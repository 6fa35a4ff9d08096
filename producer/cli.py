"""The `pushline` command: run the stack, manage apps and keys, follow messages."""

from __future__ import annotations

import os
import signal
import sys
import time
from datetime import timedelta
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.live import Live
from rich.table import Table
from sqlalchemy import Engine

from producer.apps import ApnsCredentials, create_app, create_key, find_app, list_apps, parse_roles
from producer.errors import PushlineError
from producer.inbox import create_topic, list_topics
from producer.schedules import get_schedule, list_schedules, set_state
from producer.status import message_status
from producer.trace import trace as trace_of
from schemas import metricsdir
from schemas.api import MessageStatus
from schemas.codes import CODE_MEANINGS
from schemas.db import current_revision, engine_for, migration_history, upgrade
from schemas.retention import prune
from schemas.scheduling import parse_age
from schemas.settings import get_settings

cli = typer.Typer(help="Pushline: self-hosted push notification delivery.", no_args_is_help=True)
db_cli = typer.Typer(help="The SQL store.", no_args_is_help=True)
apps_cli = typer.Typer(help="Apps (tenants) and their provider credentials.", no_args_is_help=True)
keys_cli = typer.Typer(help="API keys of an app.", no_args_is_help=True)
schedules_cli = typer.Typer(help="Scheduled, repeating and cron pushes.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(apps_cli, name="apps")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(schedules_cli, name="schedules")
inbox_cli = typer.Typer(help="Infobip-style inboxes.", no_args_is_help=True)
topics_cli = typer.Typer(help="An app's inbox topics.", no_args_is_help=True)
inbox_cli.add_typer(topics_cli, name="topics")
cli.add_typer(inbox_cli, name="inbox")
console = Console()
STATE_DIR = Path(".pushline")


def _engine() -> Engine:
    return engine_for(get_settings().database_url)


@cli.command()
def demo(
    state_dir: Annotated[Path, typer.Option(help="where the demo keeps its files")] = STATE_DIR,
) -> None:
    """Run everything on the embedded default and push to ~1,000 demo devices."""
    from producer.demo import run_demo

    raise typer.Exit(run_demo(state_dir, console))


@cli.command()
def up(
    state_dir: Annotated[Path, typer.Option(help="where the stack keeps its files")] = STATE_DIR,
) -> None:
    """Run the API, a worker and the simulators until Ctrl-C (docs at /docs)."""
    from producer.stack import Stack

    with Stack(
        state_dir,
        redis_url=os.environ.get("REDIS_URL"),
        database_url=os.environ.get("DATABASE_URL"),
    ) as stack:
        stack.api_port = get_settings().api_port
        stack.start()
        creds = stack.add_app(f"local-{int(time.time())}")
        console.print(f"API      {stack.api_url}   docs {stack.api_url}/docs")
        console.print(f"app id   {creds.app_id}")
        console.print(f"API key  {creds.api_key}   (all roles; shown once)")
        console.print(f"APNs simulator control http://127.0.0.1:{stack.apns_control_port}")
        console.print(f"FCM simulator          http://127.0.0.1:{stack.fcm_port}")
        console.print("Ctrl-C stops everything.")
        stopped = False

        def _stop(*_: object) -> None:
            nonlocal stopped
            stopped = True

        signal.signal(signal.SIGTERM, _stop)
        try:
            while not stopped:
                time.sleep(0.5)
        except KeyboardInterrupt:
            pass


@cli.command()
def api(
    host: Annotated[str, typer.Option()] = "",
    port: Annotated[int, typer.Option()] = 0,
    workers: Annotated[
        int, typer.Option(help="API processes (default PUSHLINE_API_WORKERS, else 1)")
    ] = 0,
) -> None:
    """Serve the REST API (migrates the database first)."""
    import uvicorn

    settings = get_settings()
    metricsdir.prepare("api")  # the API processes add their counts up in one directory
    uvicorn.run(
        "producer.api:create_app",
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=workers or settings.api_workers,
        access_log=False,  # producer/observe.py logs each request, secrets masked
        log_config=None,  # uvicorn's lines go through structlog (schemas/logs.py)
    )


@cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(ctx: typer.Context) -> None:
    """Run a Celery worker (extra arguments go to `celery worker`)."""
    args = [
        sys.executable,
        "-m",
        "celery",
        "--quiet",  # no text banner: every line is a log line
        "-A",
        "worker.celery_app",
        "worker",
        "--without-gossip",
        "--without-mingle",
        *ctx.args,
    ]
    os.execv(sys.executable, args)


@cli.command()
def scheduler() -> None:
    """Publish due Schedules and run the recovery sweep (one or more per deployment)."""
    os.execv(sys.executable, [sys.executable, "-m", "worker.scheduler"])


@cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def simulate(ctx: typer.Context) -> None:
    """Run a provider simulator: `pushline simulate apns|fcm [--port …]`."""
    from simulators.cli import main as simulators_main

    raise typer.Exit(simulators_main(list(ctx.args)))


@db_cli.command("current")
def db_current() -> None:
    """The revision the database is at."""
    console.print(current_revision(get_settings().database_url) or "empty (no revision)")


@db_cli.command("history")
def db_history() -> None:
    """Every migration, oldest first, with the one the database is at marked."""
    url = get_settings().database_url
    at = current_revision(url)
    for rev, doc in migration_history():
        console.print(f"{'*' if rev == at else ' '} {rev}  {doc}")


@db_cli.command("prune")
def db_prune(
    older_than: Annotated[
        str, typer.Option(help="age of the Messages to delete: 30d, 12h, 90m")
    ] = "",
) -> None:
    """Delete Messages (and their Deliveries and attempts) older than the given age, in
    small batches; the default is PUSHLINE_RETENTION_DAYS."""
    settings = get_settings()
    try:
        age = parse_age(older_than) if older_than else timedelta(days=settings.retention_days)
    except ValueError as exc:
        console.print(f"[red]--older-than: {exc}[/]")
        raise typer.Exit(2) from exc
    t0 = time.monotonic()
    done = prune(_engine(), age)
    console.print(
        f"pruned {done.messages} messages and {done.deliveries} deliveries older than"
        f" {age} in {time.monotonic() - t0:.1f} s"
    )


@cli.command()
def trace(
    any_id: Annotated[str, typer.Argument(metavar="ID", help="a Message or a Delivery id")],
) -> None:
    """One Message's or Delivery's story: accepted, fanned out, each attempt, final,
    what the app reported."""
    try:
        events = trace_of(_engine(), any_id)
    except PushlineError as exc:
        console.print(f"[red]{exc.message}[/]")
        raise typer.Exit(2) from exc
    table = Table("at (UTC)", "what", "id", "detail")
    for e in events:
        table.add_row(e.at.strftime("%Y-%m-%d %H:%M:%S.%f")[:-3], e.what, e.subject, e.detail)
    console.print(table)


@db_cli.command("upgrade")
def db_upgrade(revision: Annotated[str, typer.Argument()] = "head") -> None:
    """Apply the schema migrations (PostgreSQL or SQLite)."""
    upgrade(get_settings().database_url, revision)
    console.print(f"database at {revision}")


@apps_cli.command("create")
def apps_create(
    name: str,
    apns_key_file: Annotated[Path | None, typer.Option(help="APNs .p8 key")] = None,
    apns_key_id: Annotated[str | None, typer.Option()] = None,
    apns_team_id: Annotated[str | None, typer.Option()] = None,
    apns_cert_file: Annotated[Path | None, typer.Option(help="APNs certificate+key PEM")] = None,
    apns_topic: Annotated[str | None, typer.Option(help="bundle id")] = None,
    apns_sandbox: Annotated[bool, typer.Option(help="use the sandbox endpoint")] = False,
    fcm_service_account: Annotated[Path | None, typer.Option(help="service account JSON")] = None,
) -> None:
    """Store an app with its APNs and/or FCM credentials."""
    apns = None
    if apns_key_file or apns_cert_file:
        if not apns_topic:
            raise typer.BadParameter("--apns-topic is required with APNs credentials")
        apns = ApnsCredentials(
            topic=apns_topic,
            key_pem=apns_key_file.read_text() if apns_key_file else None,
            key_id=apns_key_id,
            team_id=apns_team_id,
            cert_pem=apns_cert_file.read_text() if apns_cert_file else None,
            sandbox=apns_sandbox,
        )
    try:
        app = create_app(
            _engine(),
            name,
            apns=apns,
            fcm_service_account_json=fcm_service_account.read_text()
            if fcm_service_account
            else None,
        )
    except PushlineError as exc:
        console.print(f"[red]{exc.message}[/]")
        raise typer.Exit(2) from exc
    console.print(f"app {app.name} created: id {app.id}")


@apps_cli.command("list")
def apps_list() -> None:
    """List apps and which providers each can reach."""
    table = Table("id", "name", "APNs", "FCM")
    for a in list_apps(_engine()):
        apns = (
            f"{a.apns_topic} ({'sandbox' if a.apns_sandbox else 'production'})"
            if a.apns_topic
            else "-"
        )
        table.add_row(a.id, a.name, apns, a.fcm_project_id or "-")
    console.print(table)


@keys_cli.command("create")
def keys_create(
    app: str,
    roles: Annotated[
        str,
        typer.Option(
            help="comma-separated: push_single, push_multiple, "
            "push_all, pushregistrations_read, admin"
        ),
    ],
    alias: Annotated[
        str | None, typer.Option(help="user name for Basic authentication (SAP alias)")
    ] = None,
    requests_per_minute: Annotated[
        int | None, typer.Option(help="request quota; beyond it the API answers 429")
    ] = None,
) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    try:
        record = find_app(_engine(), app)
        key, _ = create_key(
            _engine(),
            record.id,
            parse_roles(roles),
            alias=alias,
            requests_per_minute=requests_per_minute,
        )
    except PushlineError as exc:
        console.print(f"[red]{exc.message}[/]")
        raise typer.Exit(2) from exc
    console.print(key)


@topics_cli.command("create")
def inbox_topics_create(
    app: Annotated[str, typer.Argument(help="app name or id")],
    name: Annotated[str, typer.Argument(help="the topic, exactly as pushes will name it")],
) -> None:
    """Create an inbox topic (case sensitive) that pushes may name as `inboxTopic`."""
    try:
        topic = create_topic(_engine(), find_app(_engine(), app).id, name)
    except PushlineError as exc:
        console.print(f"[red]{exc.message}[/]")
        raise typer.Exit(2) from exc
    console.print(topic.name)


@topics_cli.command("list")
def inbox_topics_list(app: Annotated[str, typer.Argument(help="app name or id")]) -> None:
    """List an app's inbox topics."""
    try:
        record = find_app(_engine(), app)
    except PushlineError as exc:
        console.print(f"[red]{exc.message}[/]")
        raise typer.Exit(2) from exc
    table = Table("topic", "created")
    for t in list_topics(_engine(), record.id):
        table.add_row(t.name, t.created_at.isoformat(timespec="seconds"))
    console.print(table)


@cli.command()
def status(
    message_id: str,
    watch: Annotated[
        bool, typer.Option("--watch", help="follow until every delivery is final")
    ] = False,
) -> None:
    """Counts of a Message's Deliveries by status and result code."""
    engine = _engine()
    try:
        st = message_status(engine, None, message_id)
    except PushlineError as exc:
        console.print(f"[red]{exc.message}[/]")
        raise typer.Exit(2) from exc
    if not watch:
        console.print(_status_table(st))
        return
    with Live(_status_table(st), console=console, refresh_per_second=4) as live:
        while st.state not in ("done", "failed"):
            time.sleep(0.5)
            st = message_status(engine, None, message_id)
            live.update(_status_table(st))


def _status_table(st: MessageStatus) -> Table:
    table = Table(
        title=f"message {st.id}: {st.state}"
        + (f" (code {st.code}: {st.detail})" if st.code is not None else "")
    )
    table.add_column("status")
    table.add_column("count", justify="right")
    for s, n in sorted(st.by_status.items()):
        table.add_row(s, str(n))
    table.add_section()
    for code, n in sorted(st.by_code.items(), key=lambda kv: int(kv[0])):
        table.add_row(f"code {code}: {CODE_MEANINGS.get(int(code), '')}", str(n))
    table.add_section()
    table.add_row("total", str(st.total))
    return table


@schedules_cli.command("list")
def schedules_list(
    app: Annotated[str | None, typer.Option(help="app name or id")] = None,
    state: Annotated[
        str | None, typer.Option(help="scheduled, paused, cancelled, finished")
    ] = None,
) -> None:
    """Schedules with their next run and how many Messages they produced."""
    engine = _engine()
    app_id = find_app(engine, app).id if app else None
    page = list_schedules(engine, app_id, state=state, cursor=None, limit=500)
    table = Table("id", "state", "kind", "when", "next run", "runs")
    for sc in page.items:
        when = (
            sc.cron
            and f"cron {sc.cron} ({sc.timezone})"
            or (f"every {sc.repeat_every}s" if sc.repeat_every else "once")
        )
        nxt = sc.next_run_at.isoformat(timespec="seconds") if sc.next_run_at else "-"
        table.add_row(sc.id, sc.state, sc.kind, when, nxt, str(sc.runs))
    console.print(table)


@schedules_cli.command("show")
def schedules_show(schedule_id: str) -> None:
    """One Schedule and the Messages it produced."""
    try:
        sc = get_schedule(_engine(), None, schedule_id)
    except PushlineError as exc:
        console.print(f"[red]{exc.message}[/]")
        raise typer.Exit(2) from exc
    console.print_json(sc.model_dump_json())


def _steer(schedule_id: str, action: str) -> None:
    try:
        sc = set_state(_engine(), None, schedule_id, action)
    except PushlineError as exc:
        console.print(f"[red]{exc.message}[/]")
        raise typer.Exit(2) from exc
    nxt = sc.next_run_at.isoformat(timespec="seconds") if sc.next_run_at else "-"
    console.print(f"schedule {sc.id}: {sc.state}, next run {nxt}")


@schedules_cli.command("pause")
def schedules_pause(schedule_id: str) -> None:
    """Stop publishing until resumed."""
    _steer(schedule_id, "pause")


@schedules_cli.command("resume")
def schedules_resume(schedule_id: str) -> None:
    """Publish again from the next slot after now (runs missed while paused are skipped)."""
    _steer(schedule_id, "resume")


@schedules_cli.command("cancel")
def schedules_cancel(schedule_id: str) -> None:
    """Never publish again."""
    _steer(schedule_id, "cancel")


def main() -> None:
    from schemas.logs import configure_logging

    configure_logging(get_settings().log_level, get_settings().log_json)
    cli()
