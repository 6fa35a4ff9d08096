"""Device-local time (pure): time zones, a run's per-zone release times, quiet hours.

A device's zone is its Registration's `time_zone` when that names an IANA zone, else the
app's default zone (`App.timezone`, UTC unless set). Surfaces that store other spellings
(SAP's "MESZ") are read as having no zone.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from functools import lru_cache
from typing import Any, Literal
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

#: "09:00", or "09:00:30" where a second matters.
HHMM = r"^([01][0-9]|2[0-3]):[0-5][0-9](:[0-5][0-9])?$"
Missed = Literal["next_day", "skip"]
#: The furthest any zone is ahead of and behind UTC (Pacific/Kiritimati, Etc/GMT+12): a
#: local time on one date happens somewhere within these bounds of the same UTC time.
EARLIEST_OFFSET = timedelta(hours=14)
LATEST_OFFSET = timedelta(hours=12)


@lru_cache(maxsize=1024)
def zone_named(name: str | None) -> ZoneInfo | None:
    """The IANA zone `name` names, or None (no name, or not a zone)."""
    if not name:
        return None
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        return None


def device_zone(name: str | None, app_default: str | None) -> ZoneInfo:
    """The zone a device's local times are read in: its own, the app's, else UTC."""
    return zone_named(name) or zone_named(app_default) or ZoneInfo("UTC")


def check_zone(name: str) -> str:
    """A validator's check: ValueError unless `name` is an IANA time zone."""
    if zone_named(name) is None:
        raise ValueError(f"{name!r} is not an IANA time zone (e.g. Europe/Berlin)")
    return name


def check_device_zone(name: str) -> str:
    """A registration's zone: an IANA name, or a name with no "/" such as SAP's "MESZ",
    which the seed's own example registers (kept as given, read as no zone). A name shaped
    like an IANA one that is none ("Europe/Berln") is refused: it is a typo."""
    if "/" in name:
        return check_zone(name)
    return name


def clock(text: str) -> time:
    """A clock time, "09:00" or "09:00:30", as a time (the request models check the form)."""
    hours, minutes, *seconds = (int(part) for part in text.split(":"))
    return time(hours, minutes, seconds[0] if seconds else 0)


# --- deliver at each device's local time ---------------------------------------------------


def run_day(local: dict[str, Any], run_at: datetime, schedule_zone: str) -> date:
    """The local date a run is for: the one the schedule named, else the run's date in the
    schedule's own time zone."""
    if local.get("date"):
        return date.fromisoformat(str(local["date"]))
    return run_at.astimezone(device_zone(schedule_zone, None)).date()


def local_run(options: dict[str, Any], run_at: datetime, schedule_zone: str) -> dict[str, str]:
    """A Schedule's local-time options as the run's Message carries them (its day fixed)."""
    return {
        "at": str(options["at"]),
        "day": run_day(options, run_at, schedule_zone).isoformat(),
        "missed": str(options.get("missed") or "next_day"),
    }


def latest_release(local: dict[str, str]) -> datetime:
    """The latest any device of a run can get it (the last zone, a day later if missed)."""
    last = last_chance(date.fromisoformat(local["day"]), clock(local["at"]))
    return last + timedelta(days=1) if local["missed"] == "next_day" else last


def earliest_start(day: date, at: time) -> datetime:
    """When the first zone on earth reaches `at` on `day`: a run starting then finds no
    device whose `at` has passed."""
    return datetime.combine(day, at, tzinfo=UTC) - EARLIEST_OFFSET


def last_chance(day: date, at: time) -> datetime:
    """When the last zone on earth reaches `at` on `day`."""
    return datetime.combine(day, at, tzinfo=UTC) + LATEST_OFFSET


def release_at(
    day: date, at: time, zone: ZoneInfo, started: datetime, missed: str
) -> datetime | None:
    """When a device in `zone` gets a run that started at `started`: `at` on `day` there,
    or, when that had passed, the next day's `at` (missed "next_day") or never ("skip").
    A wall time a DST change skips is read with the offset before the change."""
    when = datetime.combine(day, at, tzinfo=zone).astimezone(UTC)
    if when >= started:
        return when
    if missed == "skip":
        return None
    return datetime.combine(day + timedelta(days=1), at, tzinfo=zone).astimezone(UTC)


@dataclass
class ReleaseGroup:
    """The devices of a run released together: every zone value (as registrations store it,
    None for none) whose local time falls at the same instant. `release_at` None: skipped."""

    release_at: datetime | None
    zones: list[str | None] = field(default_factory=list)
    devices: int = 0


def release_groups(
    zone_counts: Iterable[tuple[str | None, int]],
    app_default: str | None,
    local: dict[str, Any],
    started: datetime,
) -> list[ReleaseGroup]:
    """Group an audience's zones (value, devices) by release instant, soonest first, the
    skipped group last. Zones sharing an offset share a group (~40 groups at most)."""
    day, at, missed = date.fromisoformat(str(local["day"])), clock(local["at"]), local["missed"]
    groups: dict[datetime | None, ReleaseGroup] = {}
    for name, devices in zone_counts:
        when = release_at(day, at, device_zone(name, app_default), started, missed)
        group = groups.setdefault(when, ReleaseGroup(when))
        group.zones.append(name)
        group.devices += devices
    far = datetime.max.replace(tzinfo=UTC)
    return sorted(groups.values(), key=lambda g: g.release_at or far)


# --- quiet hours ---------------------------------------------------------------------------


@dataclass(frozen=True)
class Quiet:
    start: time
    end: time

    @classmethod
    def of(cls, spec: dict[str, Any] | None) -> Quiet | None:
        """Stored quiet hours ({"start": "22:00", "end": "08:00"}); equal ends: none."""
        if not spec:
            return None
        quiet = cls(clock(spec["start"]), clock(spec["end"]))
        return None if quiet.start == quiet.end else quiet


def quiet_until(now: datetime, zone: ZoneInfo, quiet: Quiet) -> datetime | None:
    """When quiet hours that hold at `now` in `zone` end (UTC), or None outside them. Hours
    that wrap midnight (22:00-08:00) end on the next day when they began before it."""
    local = now.astimezone(zone)
    t = local.time().replace(tzinfo=None)
    if quiet.start < quiet.end:
        inside, ends = quiet.start <= t < quiet.end, local.date()
    else:
        inside = t >= quiet.start or t < quiet.end
        ends = local.date() + timedelta(days=1) if t >= quiet.start else local.date()
    if not inside:
        return None
    return datetime.combine(ends, quiet.end, tzinfo=zone).astimezone(UTC)
