"""Campaign rules (pure): which Message columns a campaign's options set, keyset cursors,
and the statement that cancels a Message's Deliveries (built here, run by either side)."""

from __future__ import annotations

import base64
import math
from datetime import datetime
from typing import Any

from sqlalchemy import Update, or_, update

from schemas.codes import DeliveryStatus
from schemas.tables import Delivery, table

#: What a cancelled Delivery says (its status CANCELLED, no result code: nothing was sent).
CANCELLED_TEXT = "cancelled by the sender"


def campaign_columns(campaign: dict[str, Any]) -> dict[str, Any]:
    """The Message columns a request's (or a Schedule's stored) campaign options set."""
    return {
        "name": campaign.get("name"),
        "labels": campaign.get("labels"),
        "deliver_over_s": campaign.get("deliver_over"),
        "max_per_minute": campaign.get("max_per_minute"),
        "quiet_hours": campaign.get("quiet_hours"),
    }


def spread_rate(devices: int, deliver_over_s: int, max_per_minute: int | None) -> int:
    """The per-minute rate that spreads `devices` evenly over `deliver_over_s` seconds, no
    faster than `max_per_minute` when that is given too (at least 1 a minute)."""
    rate = max(1, math.ceil(devices * 60 / deliver_over_s))
    return min(rate, max_per_minute) if max_per_minute else rate


def encode_cursor(created_at: datetime, message_id: str) -> str:
    """A listing position, opaque to callers: (created_at, id) of the last item shown."""
    raw = f"{created_at.isoformat()}|{message_id}".encode()
    return base64.urlsafe_b64encode(raw).decode().rstrip("=")


def decode_cursor(cursor: str) -> tuple[datetime, str]:
    """ValueError when the cursor is not one `encode_cursor` made."""
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        when, message_id = raw.split("|", 1)
        return datetime.fromisoformat(when), message_id
    except (ValueError, UnicodeDecodeError) as exc:
        raise ValueError("not a cursor this listing gave") from exc


def cancel_deliveries(message_id: str, now: datetime) -> Update:
    """Every QUEUED Delivery of the Message that no task holds becomes CANCELLED (final).

    Rows a task holds are that task's to record: it stops sending them within a poll of
    Redis (worker/deliver.py), and a later claim finds the Message cancelled.
    """
    d = table(Delivery).c
    return (
        update(table(Delivery))
        .where(
            d.message_id == message_id,
            d.status == DeliveryStatus.QUEUED,
            or_(d.lease_until.is_(None), d.lease_until < now),
        )
        .values(
            status=DeliveryStatus.CANCELLED,
            code=None,
            provider_message=CANCELLED_TEXT,
            lease_until=None,
            next_attempt_at=None,
            updated_at=now,
        )
    )
