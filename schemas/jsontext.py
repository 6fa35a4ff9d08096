"""JSON text that Pushline writes on its hot paths: batches of rows for PostgreSQL, and
log lines.

orjson writes it about ten times faster than the standard library, datetimes and enums
included without a Python callback. What orjson refuses (an integer beyond 64 bits, a
dict key that is not a string) is written by the standard library, so nothing that was
accepted before is refused now. Bytes sent to a provider are not written here: their
exact form is each payload builder's own (worker/payloads.py).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from datetime import datetime
from enum import Enum
from typing import Any

import orjson


def _standard(value: Any) -> Any:
    """What the standard library is given for the types orjson writes by itself: datetimes
    as ISO 8601 (PostgreSQL reads the offset), enums as their values."""
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, Enum):
        return value.value
    raise TypeError(f"cannot write {type(value).__name__} as JSON")


def dumps(value: Any, default: Callable[[Any], Any] | None = None) -> str:
    """`value` as compact JSON text. `default` as json.dumps takes it, for other types."""
    try:
        return orjson.dumps(value, default=default).decode()
    except orjson.JSONEncodeError:
        return json.dumps(value, default=default or _standard, separators=(",", ":"))

