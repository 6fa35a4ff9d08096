"""Schedule rules (pure): validating a request and computing the next run.

Missed runs: a scheduler that was down publishes ONE run for everything it missed (the
first missed due time), then continues with the next slot after now — never a burst of
one Message per missed interval.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from croniter import croniter

from schemas.api import ScheduleSpec
from schemas.localtime import clock, earliest_start, last_chance

INVALID_PUBLISH_AT = 5030  # Backendless: "Invalid publishAt date"
INVALID_REPEAT_EXPIRES_AT = 5003  # Backendless: "Invalid repeatExpiresAt date"
#: Ten years: beyond it a period is a mistake, and it must fit the store's 32-bit column.
REPEAT_EVERY_MAX_S = 10 * 365 * 86_400


class ScheduleError(ValueError):
    def __init__(self, field: str, rule: str, code: int | None = None) -> None:
        super().__init__(f"{field}: {rule}")
        self.field, self.rule, self.code = field, rule, code


@dataclass(frozen=True)
class Plan:
    kind: str  # once | repeat | cron
    first_run_at: datetime
    publish_at: datetime | None
    repeat_every_s: int | None
    repeat_expires_at: datetime | None
    cron: str | None
    timezone: str
    local_time: dict[str, str | None] | None = None  # {"at", "date", "missed"}, see localtime


def as_instant(value: datetime | int | None, field: str, code: int) -> datetime | None:
    if value is None:
        return None
    if isinstance(value, bool):
        raise ScheduleError(field, "must be a time", code)
    if isinstance(value, int):
        try:
            return datetime.fromtimestamp(value / 1000, UTC)  # epoch milliseconds
        except (OverflowError, OSError, ValueError) as exc:
            raise ScheduleError(field, "is not a valid time", code) from exc
    return value if value.tzinfo else value.replace(tzinfo=UTC)


def plan(spec: ScheduleSpec, now: datetime, *, repeat_every_min_s: int) -> Plan:
    """Validate a schedule as Backendless documents it; raise ScheduleError naming the rule."""
    publish_at = as_instant(spec.publish_at, "schedule.publish_at", INVALID_PUBLISH_AT)
    expires = as_instant(
        spec.repeat_expires_at, "schedule.repeat_expires_at", INVALID_REPEAT_EXPIRES_AT
    )
    if publish_at is not None and publish_at < now:
        raise ScheduleError("schedule.publish_at", "Invalid publishAt date", INVALID_PUBLISH_AT)
    try:
        zone = ZoneInfo(spec.timezone)
    except (ZoneInfoNotFoundError, ValueError) as exc:
        raise ScheduleError("schedule.timezone", f"unknown time zone {spec.timezone!r}") from exc
    if spec.repeat_every is not None and spec.cron is not None:
        raise ScheduleError("schedule", "give repeat_every or cron, not both")
    if spec.repeat_every is not None and spec.repeat_every < repeat_every_min_s:
        raise ScheduleError(
            "schedule.repeat_every", f"must be at least {repeat_every_min_s} seconds"
        )
    if spec.repeat_every is not None and spec.repeat_every > REPEAT_EVERY_MAX_S:
        raise ScheduleError(
            "schedule.repeat_every", f"must be at most {REPEAT_EVERY_MAX_S} seconds (10 years)"
        )
    if spec.cron is not None and not croniter.is_valid(spec.cron):
        raise ScheduleError("schedule.cron", f"not a valid cron expression: {spec.cron!r}")
    if expires is not None and spec.repeat_every is None and spec.cron is None:
        raise ScheduleError("schedule.repeat_expires_at", "needs repeat_every or cron")
    local = local_options(spec, now)

    start = publish_at or now
    if spec.local_date is not None and spec.local_time is not None and publish_at is None:
        # Start when the first zone reaches the time that day, so every zone gets that date.
        start = max(now, earliest_start(spec.local_date, clock(spec.local_time)))
    if spec.cron is not None:
        first = cron_next(spec.cron, zone, start - timedelta(microseconds=1))
        kind = "cron"
    else:
        first = start
        kind = "repeat" if spec.repeat_every is not None else "once"
    if local is not None and first > now + timedelta(seconds=REPEAT_EVERY_MAX_S):
        raise ScheduleError("schedule", "a local-time schedule's first run must be within 10 years")
    if expires is not None and expires <= first:
        raise ScheduleError(
            "schedule.repeat_expires_at", "Invalid repeatExpiresAt date", INVALID_REPEAT_EXPIRES_AT
        )
    return Plan(
        kind, first, publish_at, spec.repeat_every, expires, spec.cron, spec.timezone, local
    )


def local_options(spec: ScheduleSpec, now: datetime) -> dict[str, str | None] | None:
    """The local-time options as a Schedule keeps them, or None; ScheduleError if invalid."""
    if spec.local_time is None:
        if spec.local_date is not None:
            raise ScheduleError("schedule.local_date", "needs local_time")
        return None
    if spec.local_date is not None:
        if spec.local_date > now.date() + timedelta(days=REPEAT_EVERY_MAX_S // 86_400):
            raise ScheduleError("schedule.local_date", "must be within 10 years")
        if spec.repeat_every is not None or spec.cron is not None:
            raise ScheduleError(
                "schedule.local_date", "only a once schedule names its date (not repeat or cron)"
            )
        if last_chance(spec.local_date, clock(spec.local_time)) < now:
            raise ScheduleError(
                "schedule.local_date", f"{spec.local_time} on it has passed in every time zone"
            )
    return {
        "at": spec.local_time,
        "date": spec.local_date.isoformat() if spec.local_date else None,
        "missed": spec.local_time_missed,
    }


def cron_next(expr: str, zone: ZoneInfo, after: datetime) -> datetime:
    """The first cron time strictly after `after`, read in the schedule's time zone."""
    local = after.astimezone(zone)
    nxt: datetime = croniter(expr, local).get_next(datetime)
    return nxt.astimezone(UTC)


def next_run(
    kind: str,
    due: datetime,
    now: datetime,
    *,
    repeat_every_s: int | None,
    repeat_expires_at: datetime | None,
    cron: str | None,
    timezone: str,
) -> datetime | None:
    """The run after the one due at `due`, skipping every slot that is not after `now`."""
    if kind == "once":
        return None
    if kind == "repeat":
        assert repeat_every_s
        step = timedelta(seconds=repeat_every_s)
        missed = max(0, int((now - due) / step))  # slots that passed while nobody published
        nxt = due + step * (missed + 1)
        while nxt <= now:
            nxt += step
    else:
        assert cron
        nxt = cron_next(cron, ZoneInfo(timezone), max(due, now))
    if repeat_expires_at is not None and nxt > repeat_expires_at:
        return None
    return nxt


_UNITS = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def parse_age(text: str) -> timedelta:
    """`30d`, `12h`, `90m` or `45s` as a duration; anything else is a ValueError."""
    number, unit = text.strip()[:-1], text.strip()[-1:].lower()
    if unit not in _UNITS or not number.isdigit() or int(number) <= 0:
        raise ValueError(f"{text!r} is not an age like 30d, 12h, 90m or 45s")
    return timedelta(seconds=int(number) * _UNITS[unit])
