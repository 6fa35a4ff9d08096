"""The README works as written: every fenced `sh` and `python` block is run, in order, in one
shell, against the stack its own `pushline up` starts (in a temporary directory, in a
network namespace of its own so that port 8080 is the README's); a block not meant to run
says why in an HTML comment on the line before it (`<!-- not run: … -->`).

Exactly two things are added around the README's text: `curl` fails on an HTTP error
(`--fail-with-body`), so a 4xx cannot pass unseen, and `pushline up` runs in the background
until it is ready. The credential files the README names (`AuthKey_ABC123.p8`,
`service-account.json`, `push.pem`) are made for the simulators (tests/readme_files.py).
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from sqlalchemy import select
from sqlmodel import Session, col

from schemas.db import engine_for
from schemas.tables import Delivery, Message

ROOT = Path(__file__).resolve().parents[1]
RUNNABLE = ("sh", "python")
NOT_RUN = re.compile(r"^<!--\s*not run:\s*(\S.*?)\s*-->$")
UP = re.compile(r"^pushline up(\s+#.*)?$", re.M)
README_TOKEN = "7a3f0c5e9b1d4f2a8c6e0b3d5f7a9c1e2b4d6f8a0c2e4b6d8f0a2c4e6b8d0f2a"
TIMEOUT_S = 420


@dataclass(frozen=True)
class Block:
    number: int
    line: int
    lang: str
    text: str
    not_run: str | None  # why, when the README says it is not run


def blocks(markdown: str) -> list[Block]:
    """The README's fenced blocks, each with the reason it is not run (if it says one)."""
    found: list[Block] = []
    lines = markdown.splitlines()
    i = 0
    while i < len(lines):
        fence = re.match(r"^```(\S*)\s*$", lines[i])
        if not fence:
            i += 1
            continue
        end = next(j for j in range(i + 1, len(lines)) if lines[j].startswith("```"))
        marker = NOT_RUN.match(lines[i - 1].strip()) if i else None
        text = "\n".join(lines[i + 1 : end]) + "\n"
        found.append(Block(len(found), i + 1, fence.group(1), text, marker and marker.group(1)))
        i = end + 1
    return found


def driver(runnable: list[Block], workdir: Path) -> str:
    """One bash script running the blocks in order, each between markers."""
    out = [
        "set -eo pipefail",
        f"cd {shlex.quote(str(workdir))}",
        'curl() { command curl --silent --show-error --fail-with-body "$@"; echo; }',
        "ready() {  # pushline up serves, its worker and scheduler beat",
        "  for _ in $(seq 1 360); do",
        "    [ -s .pushline/env ] && command curl -sf localhost:8080/v1/ready >/dev/null && return",
        "    kill -0 $UP_PID || { cat up.log; return 1; }",
        "    sleep 0.5",
        "  done",
        "  cat up.log; return 1",
        "}",
        "trap '[ -n \"$UP_PID\" ] && kill $UP_PID && wait $UP_PID' EXIT",
    ]
    for b in runnable:
        name = workdir / "blocks" / f"{b.number}.{'py' if b.lang == 'python' else 'sh'}"
        text = b.text
        if b.lang == "sh" and UP.search(text):
            text = UP.sub("pushline up > up.log 2>&1 & UP_PID=$!; ready", text)
            text += (
                f"python {ROOT / 'tests' / 'readme_files.py'} files . "
                '"$(sed -n "s/^APNs simulator control //p" up.log)" '
                '"$(sed -n "s/^FCM simulator *//p" up.log)"\n'
            )
        name.write_text(text)
        run = f"python {name}" if b.lang == "python" else f"source {name}"
        out += [f"echo '::begin {b.number}'", run, f"echo '::end {b.number}'"]
    out += [
        f"python {ROOT / 'tests' / 'readme_files.py'} settle",
        'command curl -s "$(sed -n "s/^APNs simulator control //p" up.log)/control/stats"'
        " > apns-stats.json",
    ]
    return "\n".join(out) + "\n"


@dataclass
class Run:
    blocks: list[Block]
    runnable: list[Block]
    output: str
    workdir: Path

    def of(self, needle: str) -> str:
        """The output of the one run block whose text holds `needle`."""
        (b,) = [b for b in self.runnable if needle in b.text]
        return self.output.split(f"::begin {b.number}\n", 1)[1].split(f"::end {b.number}\n")[0]

    def env(self) -> dict[str, str]:
        pairs = re.findall(
            r"^export (\w+)=(.*)$", (self.workdir / ".pushline/env").read_text(), re.M
        )
        return {k: shlex.split(v)[0] for k, v in pairs}


@pytest.fixture(scope="module")
def readme(tmp_path_factory: pytest.TempPathFactory) -> Run:
    assert shutil.which("unshare") and shutil.which("ip"), "util-linux and iproute2 are needed"
    every = blocks((ROOT / "README.md").read_text())
    runnable = [b for b in every if b.lang in RUNNABLE and b.not_run is None]
    workdir = tmp_path_factory.mktemp("readme")
    (workdir / "blocks").mkdir()
    (workdir / ".venv").symlink_to(Path(sys.executable).parents[1])
    script = workdir / "driver.sh"
    script.write_text(driver(runnable, workdir))
    env = {k: v for k, v in os.environ.items() if not k.startswith(("PUSHLINE_", "VIRTUAL_ENV"))}
    env.pop("REDIS_URL", None)
    env.pop("DATABASE_URL", None)
    # A network namespace of its own: the README's port 8080 is free whatever else runs here.
    cmd = ["unshare", "--net", "bash", "-c", f"ip link set lo up && exec bash {script}"]
    proc = subprocess.Popen(
        cmd,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        env=env,
        start_new_session=True,
    )
    try:
        output, _ = proc.communicate(timeout=TIMEOUT_S)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        output, _ = proc.communicate()
    run = Run(every, runnable, output, workdir)
    last = re.findall(r"^::begin (\d+)$", output, re.M)
    where = f"block {last[-1]} (README line {every[int(last[-1])].line})" if last else "start"
    assert proc.returncode == 0, f"the README failed in {where}:\n{output[-5000:]}"
    return run


def test_every_shell_and_python_block_runs_or_says_why_not(readme: Run) -> None:
    for b in readme.blocks:
        if b.lang in RUNNABLE and b.not_run is None:
            assert f"::end {b.number}\n" in readme.output, f"README line {b.line} did not run"
    assert len(readme.runnable) >= 15
    skipped = [b for b in readme.blocks if b.not_run is not None]
    assert all(b.lang in RUNNABLE and b.not_run for b in skipped)


def test_up_prints_the_exports_a_shell_or_python_service_needs(readme: Run) -> None:
    env = readme.env()
    assert {"REDIS_URL", "DATABASE_URL", "PUSHLINE_APP_ID", "PUSHLINE_API_KEY"} <= set(env)
    assert env["PUSHLINE_ADMIN_KEY"].startswith("pl_")
    printed = (readme.workdir / "up.log").read_text()
    for line in (readme.workdir / ".pushline/env").read_text().splitlines():
        assert line in printed.splitlines()


def test_the_first_push_ends_sent_in_the_simulator(readme: Run) -> None:
    watched = readme.of("pushline status $ID --watch                  #")
    assert ": done" in watched and re.search(r"SENT\s+│?\s*1", watched), watched
    assert "final SENT" in watched  # pushline trace
    accepted = json.loads((readme.workdir / "apns-stats.json").read_text())["accepted"]
    # the first hour, Using it, Python twice, the topic campaign, Backendless, pushline send
    assert accepted.get(README_TOKEN, 0) >= 5, accepted


def test_every_push_the_readme_makes_is_delivered(readme: Run) -> None:
    engine = engine_for(readme.env()["DATABASE_URL"])
    with Session(engine) as s:
        messages = list(s.execute(select(Message)).scalars())
        errors = list(s.execute(select(Delivery).where(col(Delivery.status) == "ERROR")).scalars())
    throttled = [m for m in messages if m.deliver_over_s]  # spread over an hour: still going
    finished = [m for m in messages if not m.deliver_over_s]
    assert len(finished) >= 8 and len(throttled) == 1
    assert [(m.name, m.state, m.code, m.detail) for m in finished if m.state != "done"] == []
    assert errors == []
    assert "SENT" in readme.of("pushline send shop --user ann")


def test_the_python_snippet_pushes_through_the_function_and_the_client(readme: Run) -> None:
    printed = readme.of("from producer import PushlineClient, accept_push")
    ids = re.findall(r"^([0-9a-f-]{36})", printed, re.M)  # the log line of the accept aside
    assert len(ids) == 2, printed
    engine = engine_for(readme.env()["DATABASE_URL"])
    with Session(engine) as s:
        states = {s.get(Message, i).state for i in ids}  # type: ignore[union-attr]
    assert states == {"done"}
