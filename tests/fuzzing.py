"""schemathesis against a live Pushline API: every operation of /openapi.json, generated
valid and invalid input (NUL bytes included), every answer checked for a 5xx, an
undocumented status, and a body, Content-Type or header the document does not allow.

`tests/test_fuzz.py` runs it bounded in time on the test session's stack; `make fuzz`
(`python -m tests.fuzzing`) starts its own stack and runs it unbounded in time, at least
20,000 requests, and prints the counts.
"""

from __future__ import annotations

import argparse
import base64
import json
import os
import subprocess
import sys
import tempfile
import uuid
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

from producer.stack import Credentials, Stack

#: Errors raised inside schemathesis, hypothesis or the interpreter running them, which say
#: nothing about the API: hypothesis's FlakyFailure when a generated case's replay answers
#: differently from its first run (POST /cm/events on a fresh app), and CPython 3.11's
#: "AST constructor recursion depth mismatch" SystemError while the coverage phase builds
#: deeply nested cases. Every answer of such a run is still checked and counted.
TOOL_FAULTS = frozenset({"FlakyFailure", "Flaky", "FlakyReplay", "SystemError", "RecursionError"})

CHECKS = (
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_schema_conformance",
    "response_headers_conformance",
    "unsupported_method",
    "allow_header_conformance",
)


@dataclass
class FuzzRun:
    exit_code: int
    output: str
    statuses: Counter[int] = field(default_factory=Counter)
    failed_checks: Counter[str] = field(default_factory=Counter)
    server_errors: list[str] = field(default_factory=list)  # "METHOD uri -> status"
    # schemathesis's own errors (its "Runtime Error"): "phase label: what was raised"
    errors: list[str] = field(default_factory=list)
    # those of them raised inside the tool (TOOL_FAULTS), not about what the API answered
    tool_faults: list[str] = field(default_factory=list)

    @property
    def unexplained_errors(self) -> list[str]:
        return [e for e in self.errors if e not in self.tool_faults]

    @property
    def requests(self) -> int:
        return sum(self.statuses.values())

    def summary(self) -> str:
        by_class = Counter(f"{s // 100}xx" for s in self.statuses.elements())
        lines = [
            f"requests: {self.requests}",
            "by status class: " + ", ".join(f"{k} {v}" for k, v in sorted(by_class.items())),
            "by status: " + ", ".join(f"{k} {v}" for k, v in sorted(self.statuses.items())),
            f"5xx answers: {len(self.server_errors)}",
            "failed checks: "
            + (", ".join(f"{k} {v}" for k, v in sorted(self.failed_checks.items())) or "none"),
            "runtime errors: " + ("; ".join(self.errors) or "none"),
            f"of them the tool's own faults: {len(self.tool_faults)}",
        ]
        return "\n".join(lines)


def _config(creds: Credentials) -> str:
    # Backendless names the app and the key in the path: give them the real ones, so its
    # operations get past authentication; malformed ones are tested by hand.
    return "\n".join(
        [
            "[parameters]",
            f'"path.application_id" = "{creds.app_id}"',
            f'"path.api_key" = "{creds.api_key}"',
            "",
            "[generation]",
            "allow-x00 = true",
            'database = "none"',
            "",
        ]
    )


def run(
    api_url: str,
    creds: Credentials,
    *,
    max_time_s: int | None = None,
    max_examples: int | None = None,
    workers: int = 2,
    echo: bool = False,
) -> FuzzRun:
    """One schemathesis run over every operation; the answers counted from its event log."""
    with tempfile.TemporaryDirectory(prefix="pushline-fuzz-") as tmp:
        config = Path(tmp) / "schemathesis.toml"
        config.write_text(_config(creds))
        events = Path(tmp) / "events.ndjson"
        cmd = [
            str(Path(sys.executable).with_name("st")),
            "--config-file",
            str(config),
            "run",
            f"{api_url}/openapi.json",
            "--header",
            f"X-API-Key:{creds.api_key}",
            "--checks",
            ",".join(CHECKS),
            "--workers",
            str(workers),
            "--no-color",
            "--report",
            "ndjson",
            "--report-ndjson-path",
            str(events),
            "--request-timeout",
            "30",
        ]
        if max_time_s is not None:
            cmd += ["--max-time", str(max_time_s)]
        if max_examples is not None:
            cmd += ["--max-examples", str(max_examples)]
        proc = subprocess.run(
            cmd,
            stdout=None if echo else subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
            check=False,
            env={**os.environ, "SCHEMATHESIS_TELEMETRY": "false"},
        )
        result = FuzzRun(proc.returncode, proc.stdout or "")
        if events.exists():
            _count(events, result)
    return result


def _count(events: Path, result: FuzzRun) -> None:
    with events.open() as lines:
        for line in lines:
            record = json.loads(line)
            if "NonFatalError" in record:
                error = record["NonFatalError"]
                value = error.get("value")
                line = f"{error.get('phase')} {error.get('label')}: {json.dumps(value)[:300]}"
                result.errors.append(line)
                if isinstance(value, dict) and value.get("type") in TOOL_FAULTS:
                    result.tool_faults.append(line)
            event = record.get("ScenarioFinished")
            if not event:
                continue
            recorder = event["recorder"]
            for interaction in recorder.get("interactions", {}).values():
                response = interaction.get("response")
                if not response:
                    continue
                status = int(response["status_code"])
                result.statuses[status] += 1
                if status >= 500:
                    request = interaction["request"]
                    body = response.get("content", {}).get("$base64", "")
                    text = base64.b64decode(body)[:200].decode("utf-8", "replace")
                    result.server_errors.append(
                        f"{request['method']} {request['uri']} -> {status} {text}"
                    )
            for checks in recorder.get("checks", {}).values():
                for check in checks:
                    if check.get("status") == "failure":
                        result.failed_checks[check["name"]] += 1


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--max-examples", type=int, default=500, help="per operation")
    parser.add_argument("--min-requests", type=int, default=20_000)
    args = parser.parse_args()
    from tests.conftest import TEST_ENV, fresh_postgres, fresh_redis

    state = Path(tempfile.mkdtemp(prefix="pushline-fuzz-stack-"))
    stack = Stack(
        state,
        redis_url=fresh_redis(13),
        database_url=fresh_postgres(f"pushline_fuzz_{os.getpid()}"),
        extra_env={**TEST_ENV, "PUSHLINE_REDIS_KEY_PREFIX": f"fuzz{os.getpid()}:"},
    )
    stack.start()
    try:
        creds = stack.add_app(f"fuzz-{uuid.uuid4().hex[:8]}")
        result = run(stack.api_url, creds, max_examples=args.max_examples, echo=True)
    finally:
        stack.stop()
    print(result.summary())
    for line in result.server_errors[:20]:
        print("  5xx:", line)
    ok = result.exit_code == 0 and not result.server_errors
    if result.requests < args.min_requests:
        print(f"fewer than {args.min_requests} requests: raise --max-examples")
        ok = False
    sys.exit(0 if ok else 1)


if __name__ == "__main__":
    main()
