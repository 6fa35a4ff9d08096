"""When to try again: one table of retry rules, by result code (or by a reason that needs its own
rule), and the pure decisions built on it. deliver.py does the I/O; nothing here touches any."""

from __future__ import annotations

import math
import random
from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime, timedelta
from enum import StrEnum

from schemas.codes import ResultCode


class Scope(StrEnum):
    DELIVERY = "delivery"  # this device waits; the rest of the lane goes on
    LANE = "lane"  # the whole (app, provider) lane waits, every worker at once (ratelimit.py)


@dataclass(frozen=True)
class RetryRule:
    first_delay_s: float
    exhausted_code: ResultCode  # the final code when attempts (or the time to live) run out
    growth: float = 2.0
    jitter: float = 1.0  # share of the delay drawn at random: 1.0 is full jitter, 0.0 none
    attempt_limit: int | None = None  # None: settings.max_attempts
    scope: Scope = Scope.DELIVERY
    scaled: bool = True  # first delay × settings.retry_base_s (lane pauses have their own)


RETRY_RULES: dict[int | str, RetryRule] = {
    ResultCode.QUEUED_COMMUNICATION_FAILED: RetryRule(1.0, ResultCode.PROVIDER_UNREACHABLE),
    ResultCode.RECOVERABLE_IO: RetryRule(1.0, ResultCode.COMMUNICATION_FAILED),
    # APNs 429 TooManyRequests is about one device: only that device slows down.
    ResultCode.TOO_MANY_FOR_DEVICE: RetryRule(5.0, ResultCode.TOO_MANY_FOR_DEVICE),
    # The whole project is over quota: one shared pause, not a retry per message. Google asks
    # for at least 60 s (deliver.py passes settings.fcm_quota_pause_s as the first pause).
    ResultCode.QUOTA_EXCEEDED: RetryRule(
        60.0, ResultCode.QUOTA_EXCEEDED, jitter=0.0, scope=Scope.LANE, scaled=False
    ),
    # A reason's rule wins over its code's. An expired JWT is re-minted (apns.py) and the
    # delivery retried at once; a fresh token also called expired means a wrong clock or key,
    # which another try cannot mend: the one retry ends in code 4.
    "ExpiredProviderToken": RetryRule(
        0.0, ResultCode.CONFIGURATION_EXPIRED, growth=1.0, jitter=0.0, attempt_limit=2
    ),
}

#: Retries whose delays differ by less than this factor share one Celery task.
COUNTDOWN_STEP = 1.15
COUNTDOWN_MIN_S = 0.05
#: Tasks waiting for a lane pause wake spread over this share of the pause after it ends, so
#: the first of them probes the provider and the others find a renewed pause if it is still
#: unhappy, instead of all sending at once.
LANE_WAKE_SPREAD = 0.25
#: A lane's pause schedule has this many steps; past the last it stays at the last (the cap).
PAUSE_STEPS = 8


def rule_for(code: int, reason: str | None = None) -> RetryRule | None:
    """The rule for a provider answer, or None when it is not retried."""
    if reason is not None and reason in RETRY_RULES:
        return RETRY_RULES[reason]
    return RETRY_RULES.get(code)


def retry_delay(
    code: int,
    attempt: int,
    *,
    reason: str | None = None,
    base_scale: float = 1.0,
    cap_s: float = 300.0,
    first_s: float | None = None,
    retry_after: float | None = None,
    rand: Callable[[], float] = random.random,
) -> float:
    """Delay before attempt `attempt + 1`; `attempt` counts the attempts made (≥ 1).

    Full jitter (a uniform draw below the exponential ceiling) spreads the retries of a whole
    chunk; a provider's Retry-After wins when it is longer.
    """
    rule = rule_for(code, reason)
    if rule is None:
        raise KeyError(f"code {code} ({reason}) is not retried")
    first = (
        first_s
        if first_s is not None
        else rule.first_delay_s * (base_scale if rule.scaled else 1.0)
    )
    ceiling = min(cap_s, first * rule.growth ** (attempt - 1))
    delay = ceiling * (1.0 - rule.jitter + rule.jitter * rand())
    if retry_after is not None:
        delay = max(delay, retry_after)
    return delay


def exhausted_code(code: int, reason: str | None = None) -> ResultCode:
    rule = rule_for(code, reason)
    if rule is None:
        raise KeyError(f"code {code} ({reason}) is not retried")
    return rule.exhausted_code


def countdown_for(delay_s: float) -> float:
    """Round a delay up onto a geometric grid, so a chunk's retries need few tasks."""
    if delay_s <= 0:
        return 0.0
    if delay_s <= COUNTDOWN_MIN_S:
        return COUNTDOWN_MIN_S
    steps = math.ceil(math.log(delay_s / COUNTDOWN_MIN_S, COUNTDOWN_STEP) - 1e-9)
    return round(COUNTDOWN_MIN_S * COUNTDOWN_STEP**steps, 3)


@dataclass(frozen=True)
class RetryPlan:
    """What follows a retryable answer: try again after `delay_s`, or end with `final_code`."""

    retry: bool
    delay_s: float = 0.0
    final_code: int | None = None
    why: str = ""  # for the log line and the Delivery's provider_message


def plan_retry(
    code: int,
    reason: str | None,
    attempts: int,
    *,
    max_attempts: int,
    now: datetime,
    expires_at: datetime | None,
    base_scale: float = 1.0,
    cap_s: float = 300.0,
    retry_after: float | None = None,
    wait_s: float | None = None,
    rand: Callable[[], float] = random.random,
) -> RetryPlan:
    """The one retry decision. `wait_s`, when given, replaces the computed delay (a lane pause
    already decided how long everyone waits). Retries stop at the Message's time to live."""
    rule = rule_for(code, reason)
    if rule is None:
        return RetryPlan(False, final_code=code, why="not retried")
    limit = min(max_attempts, rule.attempt_limit or max_attempts)
    if attempts >= limit:
        return RetryPlan(
            False, final_code=rule.exhausted_code, why=f"gave up after {attempts} attempts"
        )
    delay = (
        wait_s
        if wait_s is not None
        else retry_delay(
            code,
            attempts,
            reason=reason,
            base_scale=base_scale,
            cap_s=cap_s,
            retry_after=retry_after,
            rand=rand,
        )
    )
    delay = countdown_for(delay)
    if expires_at is not None and now + timedelta(seconds=delay) > expires_at:
        return RetryPlan(
            False,
            final_code=rule.exhausted_code,
            why=f"expired: time to live ends before the next try in {delay:.2f}s",
        )
    return RetryPlan(True, delay_s=delay, why=f"attempt {attempts} of {limit}")


def pause_schedule(first_s: float, cap_s: float) -> list[float]:
    """A lane's pause lengths for the 1st, 2nd… pushback in a row (ratelimit.py picks by streak)."""
    return [
        retry_delay(ResultCode.QUOTA_EXCEEDED, n, first_s=first_s, cap_s=max(cap_s, first_s))
        for n in range(1, PAUSE_STEPS + 1)
    ]


def lane_wake_s(pause_left_s: float, rand: Callable[[], float] = random.random) -> float:
    """When a task held back by a lane pause should look again."""
    return countdown_for(pause_left_s * (1.0 + LANE_WAKE_SPREAD * rand()))
