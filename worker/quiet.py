"""Quiet hours at send time: which claimed campaign-lane deliveries wait, and until when.

The Message's quiet hours, else its app's, read in the device's zone (its registration's,
else the app's default). A held Delivery is handed back QUEUED with `next_attempt_at` at the
end of its quiet hours, the way a throttled lane hands back what it has no tokens for, and
its chunk is enqueued again for then. The wake-up is capped (QUIET_RECHECK_S): a Celery
countdown longer than the Redis broker's visibility timeout (an hour) would be delivered
twice, so a long night is waited out in a few re-checks, each a claim and a hand-back. The
priority lane is never held.
"""

from __future__ import annotations

from collections import defaultdict
from datetime import datetime

from schemas.localtime import Quiet, device_zone, quiet_until
from schemas.tables import App
from worker.store import ClaimedDelivery, ClaimedMessage

QUIET_RECHECK_S = 1800.0


class QuietHold:
    """One chunk's deliveries held for quiet hours, by the instant their quiet hours end."""

    def __init__(self, apps: dict[str, App], now: datetime) -> None:
        self.apps = apps
        self.now = now
        self.until: dict[datetime, list[ClaimedDelivery]] = defaultdict(list)
        self._ends: dict[tuple[str | None, str, str], datetime | None] = {}

    def holds(self, c: ClaimedDelivery, msg: ClaimedMessage) -> bool:
        """True (and kept in `until`) when `c` falls inside its quiet hours now."""
        if msg.lane == "priority":
            return False
        app = self.apps.get(c.app_id)
        spec = msg.quiet_hours or (app.quiet_hours if app is not None else None)
        if not spec:
            return False
        key = (c.time_zone, c.app_id, f"{spec.get('start')}-{spec.get('end')}")
        if key not in self._ends:  # once per zone and quiet hours in a chunk
            quiet = Quiet.of(spec)
            zone = device_zone(c.time_zone, app.timezone if app is not None else None)
            self._ends[key] = quiet_until(self.now, zone, quiet) if quiet else None
        end = self._ends[key]
        if end is None:
            return False
        self.until[end].append(c)
        return True


def recheck_s(end: datetime, now: datetime) -> float:
    """When a held chunk is looked at again: when its quiet hours end, at most
    QUIET_RECHECK_S from now."""
    return max(0.5, min((end - now).total_seconds(), QUIET_RECHECK_S))


def note(end: datetime) -> str:
    return f"held: quiet hours until {end.isoformat(timespec='seconds')}"
