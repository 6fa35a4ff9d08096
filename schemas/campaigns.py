"""Campaign rules (pure): which Message columns a campaign's options set; keyset cursors."""

from __future__ import annotations

import base64
from datetime import datetime
from typing import Any


def campaign_columns(campaign: dict[str, Any]) -> dict[str, Any]:
    """The Message columns a request's (or a Schedule's stored) campaign options set."""
    return {"name": campaign.get("name"), "labels": campaign.get("labels")}


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
