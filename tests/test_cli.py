"""The `pushline` command as an operator uses it (real processes, real stores)."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from sqlalchemy import select
from sqlmodel import Session

from producer.stack import Stack
from schemas.db import engine_for
from schemas.tables import ApiKey, App
from simulators.credentials import make_apns_key, make_service_account
from tests.conftest import TEST_ENV, AppHandle

PUSHLINE = str(Path(sys.executable).with_name("pushline"))


def run(*args: str, env: dict[str, str], timeout: float = 60) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [PUSHLINE, *args],
        env={**os.environ, **env},
        capture_output=True,
        text=True,
        timeout=timeout,
    )


def sim_account(stack: Stack, project: str) -> dict[str, str]:
    """A service account the FCM simulator's token endpoint accepts."""
    account = make_service_account(project, f"https://127.0.0.1:{stack.fcm_port}/token")
    stack.fcm.register_service_account(
        account["client_email"],
        account["private_key_id"],
        project,
        private_key_pem=account["private_key"],
    )
    return account


def test_apps_and_keys_are_created_and_only_the_key_hash_is_stored(
    tmp_path: Path, stack: Stack
) -> None:
    env = {
        "DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}",
        "PUSHLINE_LOG_JSON": "false",
        "PUSHLINE_FCM_CA_FILE": stack.env["PUSHLINE_FCM_CA_FILE"],
    }
    assert run("db", "upgrade", env=env).returncode == 0
    key = make_apns_key()
    (tmp_path / "AuthKey.p8").write_text(key.key_pem)
    (tmp_path / "sa.json").write_text(json.dumps(sim_account(stack, "proj")))
    made = run(
        "apps",
        "create",
        "shop",
        "--apns-key-file",
        str(tmp_path / "AuthKey.p8"),
        "--apns-key-id",
        key.key_id,
        "--apns-team-id",
        key.team_id,
        "--apns-topic",
        "com.example.shop",
        "--fcm-service-account",
        str(tmp_path / "sa.json"),
        env=env,
    )
    assert made.returncode == 0, made.stderr
    assert "app shop created" in made.stdout
    listed = run("apps", "list", env=env)
    assert "com.example.shop (production)" in listed.stdout and "proj" in listed.stdout
    bad = run("keys", "create", "shop", "--roles", "push_all,fly", env=env)
    assert bad.returncode == 2 and "fly" in bad.stderr
    good = run("keys", "create", "shop", "--roles", "push_all,pushregistrations_read", env=env)
    api_key = good.stdout.strip()
    assert good.returncode == 0 and api_key.startswith("pl_")
    with Session(engine_for(env["DATABASE_URL"])) as s:
        [stored] = s.execute(select(ApiKey)).scalars()
    assert api_key not in (stored.key_hash, stored.prefix) and stored.roles == (
        "push_all,pushregistrations_read"
    )
    dup = run("apps", "create", "shop", "--fcm-service-account", str(tmp_path / "sa.json"), env=env)
    assert dup.returncode == 2 and "exists already" in dup.stderr


def test_status_prints_counts_by_status_and_code(stack: Stack, app: AppHandle) -> None:
    app.ios("st")
    dead = app.ios("st")
    stack.apns.script(token=dead, then="Unregistered")
    st = app.push_users("st")
    assert stack.database_url
    env = {"DATABASE_URL": stack.database_url}
    out = run("status", st.id, env=env)
    assert out.returncode == 0, out.stderr
    assert "done" in out.stdout and "SENT" in out.stdout and "ERROR" in out.stdout
    assert "code 7: registration expired" in out.stdout
    watched = run("status", st.id, "--watch", env=env)
    assert watched.returncode == 0 and "total" in watched.stdout
    assert run("status", "no-such-message", env=env).returncode == 2


def test_workers_lists_the_live_processes_and_those_holding_leases(
    stack: Stack, app: AppHandle
) -> None:
    import socket

    app.ios("wk")
    assert app.push_users("wk").state == "done"  # a pool child has taken leases: it beats
    env = {**stack.exports(), **TEST_ENV, "COLUMNS": "200"}
    out = run("workers", env=env)
    assert out.returncode == 0, out.stderr
    processes, holders = out.stdout.split("lease holders")
    assert "worker" in processes and "scheduler" in processes and "live" in processes
    assert "pushline.priority" in processes  # the queues each worker consumes
    assert f"{socket.gethostname()}:" in holders and "live" in holders
    down = run("workers", env={**env, "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert down.returncode == 2 and "REDIS_URL" in down.stderr + down.stdout


def test_demo_runs_the_whole_stack_on_the_embedded_default(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if k not in ("REDIS_URL", "DATABASE_URL")}
    out = subprocess.run(
        [PUSHLINE, "demo", "--state-dir", str(tmp_path)],
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stdout[-3000:] + out.stderr[-3000:]
    # 1003: alice's 3 and the 1000 of the broadcast; 16 refused (5 + 3 APNs, 4 FCM, 2 gone
    # browsers, 2 Huawei phones whose app was uninstalled).
    assert "OK: 1003 deliveries, 987 SENT, simulators accepted 987" in out.stdout


def test_schedules_are_listed_paused_resumed_and_cancelled_from_the_cli(
    stack: Stack, app: AppHandle
) -> None:
    sid = app.client.push(
        {
            "target": {"type": "application"},
            "payload": {"alert": "weekly"},
            "schedule": {"cron": "0 9 * * 1", "timezone": "Europe/Copenhagen"},
        }
    ).id
    assert stack.database_url
    env = {"DATABASE_URL": stack.database_url, "COLUMNS": "200"}
    listed = run("schedules", "list", "--app", app.creds.app_id, env=env)
    assert listed.returncode == 0 and sid in listed.stdout and "cron 0 9 * * 1" in listed.stdout
    assert "paused" in run("schedules", "pause", sid, env=env).stdout
    assert run("schedules", "pause", sid, env=env).returncode == 2  # already paused
    assert "scheduled" in run("schedules", "resume", sid, env=env).stdout
    shown = run("schedules", "show", sid, env=env)
    assert json.loads(shown.stdout)["state"] == "scheduled"
    assert "cancelled" in run("schedules", "cancel", sid, env=env).stdout


def test_version_and_help_show_the_real_options_and_defaults() -> None:
    env: dict[str, str] = {"COLUMNS": "200"}
    assert run("--version", env=env).stdout.startswith("pushline ")
    assert "[default: (8080, or PUSHLINE_API_PORT)]" in run("api", "--help", env=env).stdout
    worker = run("worker", "--help", env=env).stdout
    assert "--queues" in worker and "pushline.priority" in worker and "--concurrency" in worker
    assert "PUSHLINE_SCHEDULER_TICK_S" in run("scheduler", "--help", env=env).stdout
    assert "2197" in run("simulate", "apns", "--help", env=env).stdout


def test_operator_mistakes_are_one_line_errors_with_exit_code_2(tmp_path: Path) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PUSHLINE_LOG_JSON": "false"}
    fresh = {"DATABASE_URL": f"sqlite:///{tmp_path / 'none' / 'x.db'}"}
    unmigrated = run("status", "some-id", env=fresh)
    assert unmigrated.returncode == 2 and "pushline db upgrade" in unmigrated.stderr
    assert not (tmp_path / "none").exists()  # no empty database file left behind
    down = run("apps", "list", env={"DATABASE_URL": "postgresql://postgres@127.0.0.1:1/x"})
    assert down.returncode == 2 and "check DATABASE_URL" in down.stderr
    assert len(down.stderr.strip().splitlines()) == 1
    no_redis = run("worker", env={**env, "REDIS_URL": "redis://127.0.0.1:1/0"})
    assert no_redis.returncode == 2 and "check REDIS_URL" in no_redis.stderr
    assert run("db", "upgrade", env=env).returncode == 0
    missing = run("apps", "create", "a", "--apns-key-file", "nope.p8", env=env)
    assert missing.returncode == 2 and "--apns-key-file: cannot read nope.p8" in missing.stderr
    (tmp_path / "bad.p8").write_text("garbage")
    garbage = run(
        "apps",
        "create",
        "a",
        "--apns-key-file",
        str(tmp_path / "bad.p8"),
        "--apns-key-id",
        "ABC",
        "--apns-team-id",
        "T",
        "--apns-topic",
        "com.x",
        env=env,
    )
    assert garbage.returncode == 2 and "apns.key_pem" in garbage.stderr
    assert "Traceback" not in garbage.stderr + missing.stderr + down.stderr
    assert "a" not in run("apps", "list", env=env).stdout.split()  # nothing stored


def test_send_pushes_to_a_token_and_prints_the_outcome(stack: Stack, app: AppHandle) -> None:
    token = app.ios("sender")
    dead = app.ios("sender")
    stack.apns.script(token=dead, then="Unregistered")
    env = {k: v for k, v in stack.env.items() if k.startswith(("PUSHLINE_", "REDIS", "DATABASE"))}
    env["COLUMNS"] = "200"
    one = run("send", app.creds.app_id, "--token", token, "--alert", "hello", env=env)
    assert one.returncode == 0, one.stdout + one.stderr
    assert "done" in one.stdout and "SENT" in one.stdout
    both = run("send", app.creds.app_id, "--user", "sender", "--alert", "hi", env=env)
    assert both.returncode == 1 and "code 7: registration expired" in both.stdout
    assert stack.apns.stats()["accepted"].get(token) == 2


def test_apps_take_a_default_time_zone_and_quiet_hours_checked_on_the_way_in(
    tmp_path: Path,
) -> None:
    env = {"DATABASE_URL": f"sqlite:///{tmp_path / 'cli.db'}", "PUSHLINE_LOG_JSON": "false"}
    assert run("db", "upgrade", env=env).returncode == 0
    made = run("apps", "create", "shop", "--timezone", "Europe/Berlin", env=env)
    assert made.returncode == 0, made.stderr
    changed = run("apps", "update", "shop", "--quiet-hours", "22:00-08:00", env=env)
    assert changed.returncode == 0, changed.stderr
    assert "Europe/Berlin" in changed.stdout and "22:00-08:00" in changed.stdout
    with Session(engine_for(env["DATABASE_URL"])) as s:
        [app] = s.execute(select(App)).scalars()
    assert app.timezone == "Europe/Berlin"
    assert app.quiet_hours == {"start": "22:00", "end": "08:00"}
    bad_zone = run("apps", "update", "shop", "--timezone", "Mars/Olympus", env=env)
    assert bad_zone.returncode == 2 and "--timezone" in bad_zone.stderr
    bad_hours = run("apps", "update", "shop", "--quiet-hours", "late", env=env)
    assert bad_hours.returncode == 2 and "--quiet-hours" in bad_hours.stderr
    cleared = run("apps", "update", "shop", "--quiet-hours", "00:00-00:00", env=env)
    assert cleared.returncode == 0
    with Session(engine_for(env["DATABASE_URL"])) as s:
        [app] = s.execute(select(App)).scalars()
    assert app.quiet_hours is None and app.timezone == "Europe/Berlin"
