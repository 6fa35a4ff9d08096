"""schemathesis over every operation of the live API (tests/fuzzing.py), bounded in time:
no 5xx, and every answer as the OpenAPI document describes it."""

from __future__ import annotations

from tests.conftest import AppHandle
from tests.fuzzing import run

#: The whole run, across all operations; `make fuzz` runs without a time bound.
BUDGET_S = 110


def test_no_operation_answers_5xx_or_breaks_its_documented_schema(app: AppHandle) -> None:
    result = run(app.stack.api_url, app.creds, max_time_s=BUDGET_S)
    if result.exit_code and result.errors and not (result.server_errors or result.failed_checks):
        # schemathesis's own error, no 5xx and no failed check: so far always a hypothesis
        # FlakyFailure in the examples phase of POST /cm/events on a fresh app (its first
        # answer differs from a replay's). Once more, with both runs reported.
        first = result.summary()
        result = run(app.stack.api_url, app.creds, max_time_s=BUDGET_S)
        result.output = f"first run:\n{first}\n\n{result.output}"
    report = f"{result.summary()}\n{result.output[-6000:]}"
    assert result.requests > 0, report
    assert result.server_errors == [], report
    assert result.failed_checks == {}, report
    assert result.exit_code == 0, report
