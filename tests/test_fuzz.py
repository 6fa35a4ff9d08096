"""schemathesis over every operation of the live API (tests/fuzzing.py), bounded in time:
no 5xx, and every answer as the OpenAPI document describes it."""

from __future__ import annotations

from tests.conftest import AppHandle
from tests.fuzzing import run

#: The whole run, across all operations; `make fuzz` runs without a time bound.
BUDGET_S = 110


def test_no_operation_answers_5xx_or_breaks_its_documented_schema(app: AppHandle) -> None:
    result = run(app.stack.api_url, app.creds, max_time_s=BUDGET_S)
    report = f"{result.summary()}\n{result.output[-6000:]}"
    assert result.requests > 0, report
    assert result.server_errors == [], report
    assert result.failed_checks == {}, report
    assert result.unexplained_errors == [], report
    # schemathesis exits 1 for its own faults too (tests/fuzzing.TOOL_FAULTS); anything
    # else that fails the run must show up above.
    assert result.exit_code == 0 or result.tool_faults, report
