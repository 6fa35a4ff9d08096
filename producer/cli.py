"""The `pushline` command: run the stack, manage apps and keys, follow messages."""

from __future__ import annotations

import json
import os
import shlex
import signal
import sys
import time
from datetime import timedelta
from importlib.metadata import version as package_version
from pathlib import Path
from typing import Annotated, Any

import redis
import typer
from pydantic import ValidationError
from rich.console import Console
from rich.live import Live
from rich.table import Column, Table
from sqlalchemy import Engine, make_url, select
from sqlalchemy.exc import DBAPIError
from sqlmodel import Session, col

from producer.accept import accept_push
from producer.apps import (
    WebPushCredentials,
    app_out,
    create_app_checked,
    create_key,
    find_app,
    list_apps,
    parse_roles,
    update_app,
)
from producer.cancel import cancel_message
from producer.errors import PushlineError
from producer.inbox import create_topic, list_topics
from producer.keys import list_keys, revoke_key, rotate_key
from producer.messages import list_messages, timeline
from producer.schedules import get_schedule, list_schedules, set_state
from producer.status import leases_by_holder, message_status
from producer.trace import trace as trace_of
from schemas import liveness, metricsdir
from schemas.admin import ApnsIn, AppIn, AppUpdate, FcmIn, HmsIn
from schemas.api import MessageStatus, MessageTimeline
from schemas.codes import CODE_MEANINGS, Role
from schemas.db import current_revision, engine_for, migration_history, upgrade
from schemas.queueing import DEFAULT_QUEUE, PRIORITY_QUEUE, WEBHOOK_QUEUE
from schemas.retention import prune
from schemas.scheduling import parse_age
from schemas.settings import Settings, get_settings
from schemas.tables import App, Registration
from schemas.webpush import load_vapid_key, public_key_b64

cli = typer.Typer(help="Pushline: self-hosted push notification delivery.", no_args_is_help=True)
db_cli = typer.Typer(help="The SQL store.", no_args_is_help=True)
apps_cli = typer.Typer(help="Apps (tenants) and their provider credentials.", no_args_is_help=True)
keys_cli = typer.Typer(help="API keys of an app.", no_args_is_help=True)
schedules_cli = typer.Typer(help="Scheduled, repeating and cron pushes.", no_args_is_help=True)
cli.add_typer(db_cli, name="db")
cli.add_typer(apps_cli, name="apps")
cli.add_typer(keys_cli, name="keys")
cli.add_typer(schedules_cli, name="schedules")
messages_cli = typer.Typer(
    help="Messages: find, follow and cancel campaigns.", no_args_is_help=True
)
cli.add_typer(messages_cli, name="messages")
simulate_cli = typer.Typer(
    help="Run a provider simulator (a fake APNs, FCM, Web Push or Push Kit speaking the real "
    "protocol).",
    no_args_is_help=True,
)
cli.add_typer(simulate_cli, name="simulate")
inbox_cli = typer.Typer(help="Infobip-style inboxes.", no_args_is_help=True)
topics_cli = typer.Typer(help="An app's inbox topics.", no_args_is_help=True)
inbox_cli.add_typer(topics_cli, name="topics")
cli.add_typer(inbox_cli, name="inbox")
console = Console()
STATE_DIR = Path(".pushline")  # where `up`, `demo` and the default DATABASE_URL keep state


def _engine() -> Engine:
    url = get_settings().database_url
    missing = _sqlite_file(url)
    if missing is not None and not missing.exists():
        # SQLite would create an empty file here and then find no tables.
        raise CliError(
            f"no database at {missing}: start `pushline up` (or run `pushline db upgrade`),"
            " or set DATABASE_URL to where your Pushline keeps it"
        )
    return engine_for(url)


def _sqlite_file(url: str) -> Path | None:
    u = make_url(url)
    if not u.drivername.startswith("sqlite") or u.database in (None, "", ":memory:"):
        return None
    return Path(u.database)


def _version(value: bool) -> None:
    if value:
        console.print(f"pushline {package_version('pushline')}")
        raise typer.Exit()


@cli.callback()
def _root(
    version: Annotated[
        bool,
        typer.Option("--version", callback=_version, is_eager=True, help="print the version"),
    ] = False,
) -> None:
    """Pushline: self-hosted push notification delivery. The database is DATABASE_URL
    (default sqlite:///.pushline/pushline.db, where `pushline up` keeps it), the broker
    REDIS_URL (default redis://127.0.0.1:6379/0)."""


def _check_store(url: str) -> None:
    """Fails early, in one line, when the database does not answer."""
    with engine_for(url).connect():
        pass


def _check_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=5, socket_timeout=5)
    with client:
        client.ping()


def _read(path: Path | None, option: str) -> str | None:
    if path is None:
        return None
    try:
        return path.read_text()
    except OSError as exc:
        raise CliError(
            f"{option}: cannot read {path} ({exc.strerror}); give the file's path"
        ) from exc


class CliError(Exception):
    """An operator mistake: printed as one line, exit code 2."""


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
    """Run the API, a worker, a scheduler and the simulators until Ctrl-C (docs at /docs,
    the operator console at /console). Prints, and writes to STATE_DIR/env, the exports a
    shell or a Python service needs to use this stack."""
    from producer.stack import Stack

    with Stack(
        state_dir.resolve(),
        redis_url=os.environ.get("REDIS_URL"),
        database_url=os.environ.get("DATABASE_URL"),
    ) as stack:
        stack.api_port = get_settings().api_port
        stack.start()
        creds = stack.add_app(f"local-{int(time.time())}")
        assert stack.database_url
        admin_key, _ = create_key(engine_for(stack.database_url), None, [Role.ADMIN.value])
        url = stack.api_url
        console.print(f"API      {url}   docs {url}/docs   console {url}/console")
        console.print(f"app id   {creds.app_id}")
        console.print(f"API key  {creds.api_key}   (all roles; shown once)")
        console.print(f"admin key {admin_key}   (operator: /v1/apps, /console)")
        console.print(f"APNs simulator control http://127.0.0.1:{stack.apns_control_port}")
        console.print(f"FCM simulator          http://127.0.0.1:{stack.fcm_port}")
        console.print(f"Web Push simulator     http://127.0.0.1:{stack.webpush_port}")
        console.print(f"Web Push public key    {creds.webpush_public_key}", soft_wrap=True)
        exports = {
            **stack.exports(),
            "PUSHLINE_APP_ID": creds.app_id,
            "PUSHLINE_API_KEY": creds.api_key,
            "PUSHLINE_ADMIN_KEY": admin_key,
        }
        lines = [f"export {k}={shlex.quote(v)}" for k, v in exports.items()]
        env_file = stack.state_dir / "env"
        env_file.write_text("\n".join(lines) + "\n")
        env_file.chmod(0o600)  # it holds keys
        console.print(f"For a shell or a Python service (also in {env_file}):")
        typer.echo("\n".join(lines))  # plain: never wrapped or styled
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


def _default(name: str) -> str:
    """A setting's built-in default and its variable, for --help (the value used is the
    environment's when set)."""
    return f"{Settings.model_fields[name].default}, or PUSHLINE_{name.upper()}"


@cli.command()
def api(
    host: Annotated[
        str | None, typer.Option(help="interface to listen on", show_default=_default("api_host"))
    ] = None,
    port: Annotated[
        int | None, typer.Option(help="port to listen on", show_default=_default("api_port"))
    ] = None,
    workers: Annotated[
        int | None,
        typer.Option(
            help="API processes (one per core is usual)", show_default=_default("api_workers")
        ),
    ] = None,
) -> None:
    """Serve the REST API (migrates the database first; docs at /docs)."""
    import uvicorn

    from producer.httpproto import HTTP_PROTOCOL

    settings = get_settings()
    _check_store(settings.database_url)
    processes = workers or settings.api_workers
    if processes > 1:  # spawned API processes add their counts up in one directory
        metricsdir.prepare("api")
    uvicorn.run(
        "producer.api:create_app",
        factory=True,
        host=host or settings.api_host,
        port=port or settings.api_port,
        workers=processes,
        http=HTTP_PROTOCOL,  # httptools, each response in one send (producer/httpproto.py)
        access_log=False,  # producer/observe.py logs each request, secrets masked
        log_config=None,  # uvicorn's lines go through structlog (schemas/logs.py)
        # A new API process imports the app and migrates before it answers uvicorn's ping;
        # on a loaded host that takes longer than uvicorn's 5 s, which kills it over and over.
        timeout_worker_healthcheck=60,
    )


@cli.command(context_settings={"allow_extra_args": True, "ignore_unknown_options": True})
def worker(
    ctx: typer.Context,
    queues: Annotated[
        str,
        typer.Option(
            "--queues",
            "-Q",
            help=f"comma-separated queues to consume: {DEFAULT_QUEUE} (campaigns),"
            f" {PRIORITY_QUEUE} (one device or user), {WEBHOOK_QUEUE} (webhooks)",
        ),
    ] = f"{DEFAULT_QUEUE},{PRIORITY_QUEUE},{WEBHOOK_QUEUE}",
    concurrency: Annotated[
        int | None,
        typer.Option(
            "--concurrency", "-c", help="worker processes or threads", show_default="cores"
        ),
    ] = None,
    pool: Annotated[
        str, typer.Option(help="prefork (deliveries), threads (webhooks), solo")
    ] = "prefork",
) -> None:
    """Run a Celery worker: fan-out, delivery to APNs, FCM, Web Push and Push Kit, webhooks.

    Reads REDIS_URL, DATABASE_URL and the PUSHLINE_* settings; any further option is passed
    to `celery worker` (e.g. --hostname, --loglevel)."""
    settings = get_settings()
    _check_store(settings.database_url)
    _check_redis(settings.redis_url)
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
        "-Q",
        queues,
        "--pool",
        pool,
        *(["--concurrency", str(concurrency)] if concurrency else []),
        *ctx.args,
    ]
    os.execv(sys.executable, args)


@cli.command()
def scheduler() -> None:
    """Publish due Schedules, recover work a broker or a killed worker lost, prune Messages.

    Several may run (they share the work through the store). Settings:
    PUSHLINE_SCHEDULER_TICK_S (1.0), PUSHLINE_SWEEP_INTERVAL_S (15),
    PUSHLINE_SWEEP_GRACE_S (180), PUSHLINE_RETENTION_DAYS (30), PUSHLINE_METRICS_PORT."""
    settings = get_settings()
    _check_store(settings.database_url)
    _check_redis(settings.redis_url)
    os.execv(sys.executable, [sys.executable, "-m", "worker.scheduler"])


@simulate_cli.command("apns")
def simulate_apns(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TLS (HTTP/2) port; 0 picks a free one")] = 2197,
    control_port: Annotated[int, typer.Option(help="plain-HTTP control port; 0: free")] = 2198,
    tls_dir: Annotated[
        Path, typer.Option(help="where ca.pem and the server certificate live (made if missing)")
    ] = Path(".simulators/tls"),
    log_level: Annotated[
        str, typer.Option(help="critical, error, warning, info, debug")
    ] = "warning",
) -> None:
    """A fake APNs (HTTP/2 over TLS) that checks what Apple checks."""
    from simulators.cli import main as simulators_main

    raise typer.Exit(
        simulators_main(
            [
                "--log-level",
                log_level,
                "apns",
                "--host",
                host,
                "--port",
                str(port),
                "--control-port",
                str(control_port),
                "--tls-dir",
                str(tls_dir),
            ]
        )
    )


@simulate_cli.command("fcm")
def simulate_fcm(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="HTTP port (HTTP/1.1 and HTTP/2); 0: free")] = 2199,
    log_level: Annotated[
        str, typer.Option(help="critical, error, warning, info, debug")
    ] = "warning",
) -> None:
    """A fake FCM HTTP v1 API with its OAuth2 token endpoint (/token)."""
    from simulators.cli import main as simulators_main

    raise typer.Exit(
        simulators_main(["--log-level", log_level, "fcm", "--host", host, "--port", str(port)])
    )


@simulate_cli.command("webpush")
def simulate_webpush(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="TLS (HTTP/2) port; 0: free")] = 2200,
    log_level: Annotated[
        str, typer.Option(help="critical, error, warning, info, debug")
    ] = "warning",
) -> None:
    """A fake browser push service: subscriptions, VAPID checks, payload decryption."""
    from simulators.cli import main as simulators_main

    raise typer.Exit(
        simulators_main(["--log-level", log_level, "webpush", "--host", host, "--port", str(port)])
    )


@simulate_cli.command("hms")
def simulate_hms(
    host: Annotated[str, typer.Option(help="interface to listen on")] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="port (TLS and plain HTTP); 0: free")] = 2201,
    log_level: Annotated[
        str, typer.Option(help="critical, error, warning, info, debug")
    ] = "warning",
) -> None:
    """A fake Huawei Push Kit: OAuth 2.0 token endpoint and messages:send."""
    from simulators.cli import main as simulators_main

    raise typer.Exit(
        simulators_main(["--log-level", log_level, "hms", "--host", host, "--port", str(port)])
    )


@db_cli.command("current")
def db_current() -> None:
    """The revision the database is at."""
    console.print(current_revision(get_settings().database_url) or "empty (no revision)")


@db_cli.command("history")
def db_history() -> None:
    """Every migration, oldest first, with the one the database is at marked."""
    url = get_settings().database_url
    try:
        at = current_revision(url)
    except DBAPIError:
        at = None  # no database yet: the history alone
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
    """Apply the schema migrations (PostgreSQL or SQLite; creates the SQLite file)."""
    url = get_settings().database_url
    if (path := _sqlite_file(url)) is not None:
        path.parent.mkdir(parents=True, exist_ok=True)
    upgrade(url, revision)
    console.print(f"database at {revision}")


ApnsKeyOpt = Annotated[Path | None, typer.Option(help="APNs .p8 key file (token auth)")]
ApnsKeyIdOpt = Annotated[str | None, typer.Option(help="the .p8 key's id (10 characters)")]
ApnsTeamOpt = Annotated[str | None, typer.Option(help="your Apple team id")]
ApnsCertOpt = Annotated[
    Path | None, typer.Option(help="APNs certificate PEM with its private key (certificate auth)")
]
ApnsTopicOpt = Annotated[str | None, typer.Option(help="the app's bundle id")]
FcmOpt = Annotated[Path | None, typer.Option(help="FCM service account JSON (must mint a token)")]
HmsAppIdOpt = Annotated[str | None, typer.Option(help="Huawei Push Kit app id (digits)")]
HmsSecretOpt = Annotated[
    str | None, typer.Option(help="Huawei Push Kit client secret (must get a token)")
]


def _apns_in(
    key_file: Path | None,
    key_id: str | None,
    team_id: str | None,
    cert_file: Path | None,
    topic: str | None,
    environment: str | None,
) -> ApnsIn | None:
    given = dict(
        key_pem=_read(key_file, "--apns-key-file"),
        certificate_pem=_read(cert_file, "--apns-cert-file"),
        key_id=key_id,
        team_id=team_id,
        topic=topic,
        environment=environment,
    )
    if all(v is None for v in given.values()):
        return None
    return ApnsIn(**given)


def _fcm_in(path: Path | None) -> FcmIn | None:
    text = _read(path, "--fcm-service-account")
    if text is None:
        return None
    try:
        return FcmIn(service_account=json.loads(text))
    except ValueError as exc:
        raise CliError(f"--fcm-service-account: {path} is not JSON ({exc})") from exc


def _hms_in(app_id: str | None, client_secret: str | None) -> HmsIn | None:
    if app_id is None and client_secret is None:
        return None
    if not app_id or not client_secret:
        raise CliError("--hms-app-id and --hms-client-secret go together")
    try:
        return HmsIn(app_id=app_id, client_secret=client_secret)
    except ValidationError as exc:
        err = exc.errors()[0]
        field = "--hms-app-id" if err["loc"][0] == "app_id" else "--hms-client-secret"
        rule = "digits only" if field == "--hms-app-id" else "no spaces, at most 255 characters"
        raise CliError(f"{field}: {rule}") from None
ZoneOpt = Annotated[
    str | None,
    typer.Option(help="time zone (IANA) of devices that name none; UTC unless set"),
]
QuietOpt = Annotated[
    str | None,
    typer.Option(
        help="quiet hours for campaigns, local to each device: START-END, e.g. 22:00-08:00 "
        "(00:00-00:00: none)"
    ),
]


def _local_settings(timezone: str | None, quiet_hours: str | None) -> dict[str, Any]:
    """--timezone and --quiet-hours as AppIn/AppUpdate fields."""
    given: dict[str, Any] = {}
    if timezone is not None:
        given["timezone"] = timezone
    if quiet_hours is not None:
        start, _, end = quiet_hours.partition("-")
        given["quiet_hours"] = {"start": start.strip(), "end": end.strip()}
    return given


def _app_model(model: type[AppIn] | type[AppUpdate], **given: Any) -> Any:
    try:
        return model(**given)
    except ValidationError as exc:
        first = exc.errors()[0]
        field = ".".join(str(p) for p in first["loc"]).replace("_", "-")
        raise CliError(f"--{field}: {first['msg']}") from exc


def _print_app(app: App) -> None:
    out = app_out(app)
    table = Table("field", "value", title=f"app {out.name}", show_header=False)
    table.add_row("id", out.id)
    if out.apns:
        a = out.apns
        auth = (
            f"certificate (expires {a.certificate_expires_at:%Y-%m-%d})"
            if a.auth == "certificate"
            else f"key {a.key_id}, team {a.team_id}"
        )
        table.add_row("APNs", f"{a.topic} ({a.environment}), {auth}")
    else:
        table.add_row("APNs", "-")
    table.add_row("FCM", f"{out.fcm.project_id} ({out.fcm.client_email})" if out.fcm else "-")
    table.add_row("Huawei Push Kit", f"app id {out.hms.app_id}" if out.hms else "-")
    table.add_row("time zone", out.timezone)
    quiet = out.quiet_hours
    table.add_row("quiet hours", f"{quiet['start']}-{quiet['end']}" if quiet else "-")
    table.add_row("updated", out.updated_at.isoformat(timespec="seconds"))
    console.print(table)


@apps_cli.command("create")
def apps_create(
    name: str,
    apns_key_file: ApnsKeyOpt = None,
    apns_key_id: ApnsKeyIdOpt = None,
    apns_team_id: ApnsTeamOpt = None,
    apns_cert_file: ApnsCertOpt = None,
    apns_topic: ApnsTopicOpt = None,
    apns_sandbox: Annotated[bool, typer.Option(help="use APNs' sandbox endpoint")] = False,
    fcm_service_account: FcmOpt = None,
    webpush: Annotated[
        bool, typer.Option("--webpush", help="generate a VAPID key pair for Web Push")
    ] = False,
    webpush_key_file: Annotated[
        Path | None, typer.Option(help="VAPID private key (P-256, PEM) instead of a new one")
    ] = None,
    webpush_subject: Annotated[
        str | None, typer.Option(help="VAPID contact: mailto:<address> or https://<host>")
    ] = None,
    hms_app_id: HmsAppIdOpt = None,
    hms_client_secret: HmsSecretOpt = None,
    timezone: ZoneOpt = None,
    quiet_hours: QuietOpt = None,
) -> None:
    """Store an app with its APNs, FCM, Web Push and/or Huawei Push Kit credentials, checked
    first: a .p8 must be an EC key, a certificate valid now, a service account and a Huawei
    app id and secret must get a token."""
    vapid = None
    if webpush or webpush_key_file or webpush_subject:
        if not webpush_subject:
            raise CliError("--webpush-subject is required with Web Push credentials")
        pem = _read(webpush_key_file, "--webpush-key-file")
        vapid = WebPushCredentials(subject=webpush_subject, private_key_pem=pem)
    apns = _apns_in(
        apns_key_file,
        apns_key_id,
        apns_team_id,
        apns_cert_file,
        apns_topic,
        "sandbox" if apns_sandbox else None,
    )
    given = _app_model(
        AppIn,
        name=name,
        apns=apns,
        fcm=_fcm_in(fcm_service_account),
        hms=_hms_in(hms_app_id, hms_client_secret),
        **_local_settings(timezone, quiet_hours),
    )
    app = create_app_checked(_engine(), get_settings(), given, webpush=vapid)
    console.print(f"app {app.name} created: id {app.id}")
    if app.webpush_private_key_pem:
        # What the web front end passes to pushManager.subscribe() as applicationServerKey
        # (also served at GET /v1/apps/{id}/webpush/public-key).
        key = public_key_b64(load_vapid_key(app.webpush_private_key_pem))
        console.print(f"Web Push public key {key}", soft_wrap=True)


@apps_cli.command("list")
def apps_list() -> None:
    """List apps and which providers each can reach."""
    table = Table("id", "name")
    for provider in ("APNs", "FCM", "Web Push", "Push Kit"):
        table.add_column(provider, no_wrap=True)  # the id wraps first on a narrow terminal
    for a in list_apps(_engine()):
        apns = (
            f"{a.apns_topic} ({'sandbox' if a.apns_sandbox else 'production'})"
            if a.apns_topic
            else "-"
        )
        web = "VAPID" if a.webpush_private_key_pem else "-"
        table.add_row(a.id, a.name, apns, a.fcm_project_id or "-", web, a.hms_app_id or "-")
    console.print(table)


@apps_cli.command("show")
def apps_show(app: Annotated[str, typer.Argument(help="app name or id")]) -> None:
    """An app's credentials (which ones, never their secrets)."""
    _print_app(find_app(_engine(), app))


@apps_cli.command("update")
def apps_update(
    app: Annotated[str, typer.Argument(help="app name or id")],
    name: Annotated[str | None, typer.Option(help="a new name")] = None,
    apns_key_file: ApnsKeyOpt = None,
    apns_key_id: ApnsKeyIdOpt = None,
    apns_team_id: ApnsTeamOpt = None,
    apns_cert_file: ApnsCertOpt = None,
    apns_topic: ApnsTopicOpt = None,
    apns_environment: Annotated[str | None, typer.Option(help="sandbox or production")] = None,
    fcm_service_account: FcmOpt = None,
    hms_app_id: HmsAppIdOpt = None,
    hms_client_secret: HmsSecretOpt = None,
    timezone: ZoneOpt = None,
    quiet_hours: QuietOpt = None,
) -> None:
    """Change an app's name, credentials, default time zone or quiet hours, checked as on
    creation; what is not given is kept. Nothing is stored unless all of it is valid."""
    engine = _engine()
    record = find_app(engine, app)
    apns = _apns_in(
        apns_key_file, apns_key_id, apns_team_id, apns_cert_file, apns_topic, apns_environment
    )
    given = _app_model(
        AppUpdate,
        name=name,
        apns=apns,
        fcm=_fcm_in(fcm_service_account),
        hms=_hms_in(hms_app_id, hms_client_secret),
        **_local_settings(timezone, quiet_hours),
    )
    _print_app(update_app(engine, get_settings(), record.id, given))


@keys_cli.command("create")
def keys_create(
    app: Annotated[str | None, typer.Argument(help="app name or id (none with --admin)")] = None,
    roles: Annotated[
        str | None,
        typer.Option(
            help="comma-separated: push_single, push_multiple, "
            "push_all, pushregistrations_read, admin"
        ),
    ] = None,
    admin: Annotated[
        bool,
        typer.Option(
            "--admin",
            help="an operator key: bound to no app, it manages every app through /v1/apps",
        ),
    ] = False,
    alias: Annotated[
        str | None, typer.Option(help="user name for Basic authentication (SAP alias)")
    ] = None,
    requests_per_minute: Annotated[
        int | None, typer.Option(help="request quota; beyond it the API answers 429")
    ] = None,
) -> None:
    """Create an API key; it is printed once and only its hash is stored."""
    if admin == (app is not None):
        raise CliError("give an APP and --roles, or --admin (an operator key) without an app")
    engine = _engine()
    app_id = None if admin else find_app(engine, app or "").id
    if not admin and not roles:
        raise CliError("--roles: required for an app's key (e.g. --roles push_all)")
    key, _ = create_key(
        engine,
        app_id,
        parse_roles(roles or "admin"),
        alias=alias,
        requests_per_minute=requests_per_minute,
    )
    console.print(key)


@keys_cli.command("list")
def keys_list(
    app: Annotated[str | None, typer.Argument(help="app name or id (all keys if left out)")] = None,
) -> None:
    """Keys with their roles, state and last use (to the minute); never their secrets."""
    engine = _engine()
    keys = list_keys(engine, find_app(engine, app).id if app else None)
    names = {a.id: a.name for a in list_apps(engine)}
    table = Table("id", "prefix", "app", "roles", "alias", "state", "last used", "expires")
    for k in keys:
        table.add_row(
            k.id,
            k.prefix,
            names.get(k.app_id or "", "(operator)"),
            ",".join(k.roles),
            k.alias or "-",
            k.state,
            k.last_used_at.isoformat(timespec="minutes") if k.last_used_at else "never",
            k.expires_at.isoformat(timespec="seconds") if k.expires_at else "-",
        )
    console.print(table)


@keys_cli.command("revoke")
def keys_revoke(
    key_id: Annotated[str, typer.Argument(metavar="KEY", help="key id or prefix (keys list)")],
) -> None:
    """Revoke a key: it stops working at once in every API process."""
    out = revoke_key(_engine(), get_settings(), None, key_id)
    console.print(f"key {out.prefix} revoked")


@keys_cli.command("rotate")
def keys_rotate(
    key_id: Annotated[str, typer.Argument(metavar="KEY", help="key id or prefix (keys list)")],
    overlap: Annotated[
        str | None,
        typer.Option(
            help="how long the old secret keeps working: 90m, 12h, 7d (default: not at all)"
        ),
    ] = None,
) -> None:
    """A new secret with the same roles and alias; prints it once. Without --overlap the old
    secret stops at once (SAP: the service key recreated)."""
    try:
        seconds = int(parse_age(overlap).total_seconds()) if overlap else 0
    except ValueError as exc:
        raise CliError(f"--overlap: {exc}") from exc
    secret, _new, old = rotate_key(_engine(), get_settings(), None, key_id, seconds)
    until = f"until {old.expires_at:%Y-%m-%d %H:%M:%S} UTC" if old.expires_at else "no longer"
    console.print(secret)
    Console(stderr=True).print(f"the old key {old.prefix} works {until}", highlight=False)


@cli.command()
def send(
    app: Annotated[str, typer.Argument(help="app name or id")],
    alert: Annotated[str, typer.Option(help="the notification's text")],
    token: Annotated[
        str | None, typer.Option(help="one registered device, by its push token")
    ] = None,
    user: Annotated[str | None, typer.Option(help="every device of this username")] = None,
    all_devices: Annotated[
        bool, typer.Option("--all", help="every active device of the app")
    ] = False,
    title: Annotated[str | None, typer.Option(help="a title above the text")] = None,
    timeout: Annotated[float, typer.Option(help="seconds to wait for the outcome")] = 60.0,
) -> None:
    """A test push, accepted as the API accepts one (store and queue), then followed until
    every Delivery is final; prints the outcome. Exit code 1 when any Delivery failed."""
    if sum((token is not None, user is not None, all_devices)) != 1:
        raise CliError("give exactly one of --token, --user or --all")
    engine = _engine()
    record = find_app(engine, app)
    target = _send_target(engine, record.id, token, user)
    body = {"target": target, "payload": {"alert": {"title": title, "body": alert}}}
    accepted = accept_push(record.id, body, settings=get_settings(), engine=engine)
    deadline = time.monotonic() + timeout
    st = message_status(engine, record.id, accepted.message_id)
    while st.state not in ("done", "failed", "cancelled") and time.monotonic() < deadline:
        time.sleep(0.2)
        st = message_status(engine, record.id, accepted.message_id)
    console.print(_status_table(st))
    if st.state not in ("done", "failed", "cancelled"):
        raise CliError(f"not final after {timeout:g} s: follow it with `pushline status {st.id}`")
    raise typer.Exit(0 if st.state == "done" and not st.by_status.get("ERROR") else 1)


def _send_target(
    engine: Engine, app_id: str, token: str | None, user: str | None
) -> dict[str, object]:
    if user is not None:
        return {"type": "users", "usernames": [user]}
    if token is None:
        return {"type": "application"}
    with Session(engine) as s:
        reg = (
            s.execute(
                select(col(Registration.id)).where(
                    col(Registration.app_id) == app_id, col(Registration.token) == token
                )
            )
            .scalars()
            .first()
        )
    if reg is None:
        raise CliError(f"--token: no registration of this app has the token {token[:16]}…")
    return {"type": "device", "registration_id": reg}


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
def workers() -> None:
    """Worker and scheduler processes by their heartbeats, and the processes holding
    leases on Deliveries (the scheduler frees those of one silent for 30 s)."""
    settings = get_settings()
    r = liveness.client(settings)
    try:
        beats = liveness.read_beats(r, settings)
        holders = liveness.read_holders(r, settings)
    except redis.RedisError as exc:
        raise CliError(f"REDIS_URL: Redis does not answer ({exc})") from exc
    now = time.time()
    console.print(_processes_table(beats, now))
    console.print(_holders_table(holders, leases_by_holder(_engine()), now))


def _state(at: float, now: float) -> str:
    return "live" if now - at <= liveness.STALE_AFTER_S else "[red]silent[/]"


def _processes_table(beats: list[liveness.Beat], now: float) -> Table:
    table = Table("name", "role", "queues", "process", "last beat", "state", title="processes")
    for b in sorted(beats, key=lambda b: (b.role, b.name)):
        process = f"{b.host}:{b.pid}"
        ago = f"{now - b.at:,.0f} s ago"
        table.add_row(b.name, b.role, " ".join(b.queues), process, ago, _state(b.at, now))
    return table


def _holders_table(holders: dict[str, float], leased: dict[str, int], now: float) -> Table:
    table = Table("process", "last beat", "state", "deliveries leased", title="lease holders")
    for name in sorted(set(holders) | set(leased)):
        at = holders.get(name)
        ago = "-" if at is None else f"{now - at:,.0f} s ago"
        state = "not beating" if at is None else _state(at, now)
        table.add_row(name, ago, state, f"{leased.get(name, 0):,}")
    return table


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
        while st.state not in ("done", "failed", "cancelled"):
            time.sleep(0.5)
            st = message_status(engine, None, message_id)
            live.update(_status_table(st))


def _status_table(st: MessageStatus) -> Table:
    named = f" {st.name!r}" if st.name else ""
    table = Table(
        title=f"message {st.id}{named}: {st.state}"
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


@messages_cli.command("list")
def messages_list(
    app: Annotated[str | None, typer.Option(help="app name or id")] = None,
    state: Annotated[
        str | None, typer.Option(help="accepted, dispatched, done, failed, cancelled")
    ] = None,
    label: Annotated[str | None, typer.Option(help="only Messages with this label")] = None,
    limit: Annotated[int, typer.Option(help="how many, newest first")] = 50,
) -> None:
    """Messages newest first, with their name, labels and state."""
    engine = _engine()
    try:
        app_id = find_app(engine, app).id if app else None
        page = list_messages(engine, app_id, state=state, label=label, limit=limit)
    except PushlineError as exc:
        console.print(f"[red]{exc.message}[/]")
        raise typer.Exit(2) from exc
    table = Table("name", "labels", "state", "target", "deliveries", "accepted at")
    # Ids are what the other commands take: never cut, whatever the terminal's width.
    table.columns.insert(0, Column("id", no_wrap=True, min_width=36))
    for m in page.items:
        when = m.created_at.isoformat(timespec="seconds")
        table.add_row(
            m.id,
            m.name or "-",
            ",".join(m.labels) or "-",
            m.state,
            m.target_type,
            str(m.total),
            when,
        )
    console.print(table)


@messages_cli.command("show")
def messages_show(message_id: str) -> None:
    """A Message's counts by status and code, and its timeline (sent, failed, cancelled per
    minute)."""
    engine = _engine()
    try:
        st = message_status(engine, None, message_id)
        tl = timeline(engine, None, message_id)
    except PushlineError as exc:
        console.print(f"[red]{exc.message}[/]")
        raise typer.Exit(2) from exc
    console.print(_status_table(st))
    if st.releases:
        console.print(_releases_table(st))
    console.print(_timeline_table(tl))


def _releases_table(st: MessageStatus) -> Table:
    """A local-time run's groups: when each zone group gets it, how many, and its state."""
    at = (st.local_time or {}).get("at")
    table = Table("release at (UTC)", "devices", "state", "zones", title=f"local time {at}")
    for g in st.releases:
        when = g.release_at.isoformat(timespec="seconds") if g.release_at else "-"
        zones = ", ".join(z or "(none: app default)" for z in g.zones)
        table.add_row(when, str(g.devices), g.state, zones)
    return table


@messages_cli.command("timeline")
def messages_timeline(message_id: str) -> None:
    """Sent, failed and cancelled Deliveries per minute."""
    try:
        tl = timeline(_engine(), None, message_id)
    except PushlineError as exc:
        console.print(f"[red]{exc.message}[/]")
        raise typer.Exit(2) from exc
    console.print(_timeline_table(tl))


@messages_cli.command("cancel")
def messages_cancel(message_id: str) -> None:
    """Stop a Message in flight: nothing more is sent; what was sent stays SENT."""
    try:
        st = cancel_message(_engine(), get_settings(), None, message_id)
    except PushlineError as exc:
        console.print(f"[red]{exc.message}[/]")
        raise typer.Exit(2) from exc
    console.print(_status_table(st))


def _timeline_table(tl: MessageTimeline) -> Table:
    table = Table("minute (UTC)", "sent", "failed", "cancelled", title=f"timeline {tl.message_id}")
    for m in tl.minutes:
        when = m.minute.strftime("%Y-%m-%d %H:%M")
        table.add_row(when, str(m.sent), str(m.failed), str(m.cancelled))
    return table


def explain(exc: BaseException, settings: Settings) -> str | None:
    """One line saying what went wrong and what to do; None for a bug (a traceback then)."""
    db = make_url(settings.database_url).render_as_string(hide_password=True)
    rd = make_url(settings.redis_url).render_as_string(hide_password=True)
    if isinstance(exc, CliError | PushlineError):
        return str(exc.message if isinstance(exc, PushlineError) else exc)
    if isinstance(exc, DBAPIError):
        text = str(exc.orig).strip().splitlines()[0] if exc.orig else str(exc)
        if "no such table" in text or "does not exist" in text and "relation" in text:
            return f"the database at {db} has no Pushline tables: run `pushline db upgrade`"
        return f"cannot use the database at {db} ({text}): is it running? check DATABASE_URL"
    if isinstance(exc, redis.RedisError):
        return f"cannot reach Redis at {rd} ({exc}): is it running? check REDIS_URL"
    if isinstance(exc, ValidationError):  # a PUSHLINE_* variable with a bad value
        err = exc.errors()[0]
        return f"setting {'.'.join(map(str, err['loc']))}: {err['msg']}; check the environment"
    return None


def main() -> None:
    from schemas.logs import configure_logging

    try:
        settings = get_settings()
        configure_logging(settings.log_level, settings.log_json)
        cli(prog_name="pushline")
    except Exception as exc:
        try:
            settings = get_settings()
        except ValidationError:
            settings = Settings.model_construct()
        line = explain(exc, settings)
        if line is None:
            raise
        Console(stderr=True).print(f"[red]error:[/] {line}", highlight=False, soft_wrap=True)
        sys.exit(2)
