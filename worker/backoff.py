"""When to try again: exponential backoff with full jitter, table-driven by result code."""

from __future__ import annotations

import random
from collections.abc import Callable
from dataclasses import dataclass

from schemas.codes import ResultCode


@dataclass(frozen=True)
class RetryRule:
    first_delay_s: float
    exhausted_code: ResultCode  # the final code when attempts run out


RETRY_RULES: dict[int, RetryRule] = {
    ResultCode.QUEUED_COMMUNICATION_FAILED: RetryRule(1.0, ResultCode.PROVIDER_UNREACHABLE),
    ResultCode.RECOVERABLE_IO: RetryRule(1.0, ResultCode.COMMUNICATION_FAILED),
    ResultCode.TOO_MANY_FOR_DEVICE: RetryRule(5.0, ResultCode.TOO_MANY_FOR_DEVICE),
    # Google asks for at least 60 s after QUOTA_EXCEEDED.
    ResultCode.QUOTA_EXCEEDED: RetryRule(60.0, ResultCode.QUOTA_EXCEEDED),
}


def retry_delay(
    code: int,
    attempt: int,
    *,
    base_scale: float = 1.0,
    cap_s: float = 300.0,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Delay before attempt `attempt + 1`; `attempt` counts the attempts made (≥ 1).

    Full jitter (a uniform draw below the exponential ceiling) spreads retries of a whole
    chunk; a provider's Retry-After wins when it is longer.
    """
    rule = RETRY_RULES[code]
    ceiling = min(cap_s, rule.first_delay_s * base_scale * 2 ** (attempt - 1))
    floor = rule.first_delay_s * base_scale if code == ResultCode.QUOTA_EXCEEDED else 0.0
    delay = max(floor, ceiling * rand())
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def exhausted_code(code: int) -> ResultCode:
    return RETRY_RULES[code].exhausted_code
