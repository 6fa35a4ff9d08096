"""UUIDs whose random bits are drawn from the kernel's CSPRNG 4 KiB at a time.

Rows get time-ordered ids (version 7, RFC 9562: Unix milliseconds, then 74 random bits).
With random ids every insert lands on a random page of each index that holds an id (the
primary key, a Delivery's message id), so once the tables outgrow the cache each push
reads and dirties pages all over them: with 2,000,000 pushes already stored, writing a
single-device push cost PostgreSQL 104.5 µs of CPU with random ids and 55.0 µs with
time-ordered ones (`python -m bench.ids`, medians on the 2-core host). New ids land at
the end of each index instead. They stay unguessable (74 random bits) and sort by creation.
Task ids, request ids and delivery tags, which no index holds, stay random (version 4).

`uuid.uuid4()` makes one getrandom system call per id. A single-device push takes three
or four ids (its Message, its Delivery, the request, the task), and on a loaded VM each
call cost several microseconds: about 9 % of the API's CPU per push. Here one call
serves 256 ids. The bytes are the same os.urandom bytes; only the batching differs. They
are turned into hex once per draw too: an id is then a slice and a format (2.3 µs, where
building each from its own 16 bytes took 6 µs on a loaded host).

The buffer is emptied in a forked child (a Celery pool process, a uvicorn worker), so no
two processes ever hand out the same bytes, and a lock keeps threads from sharing them.
"""

from __future__ import annotations

import os
import threading
import time

_DRAW = 4096  # bytes per system call: 256 ids
_lock = threading.Lock()
_buffer = ""  # the drawn bytes as hex: one .hex() per draw, not one per id
_at = 0
# The variant nibble: the top two bits set to 10 (RFC 9562), the low two kept random.
_VARIANT = {c: "89ab"[int(c, 16) & 3] for c in "0123456789abcdef"}


def _forget() -> None:
    global _buffer, _at, _lock
    _buffer, _at, _lock = "", 0, threading.Lock()


os.register_at_fork(after_in_child=_forget)


def _random32() -> str:
    """32 random hex digits."""
    global _buffer, _at
    with _lock:
        if _at + 32 > len(_buffer):
            _buffer, _at = os.urandom(_DRAW).hex(), 0
        at = _at
        _at = at + 32
        return _buffer[at : at + 32]


def uuid4_hex() -> str:
    """32 hex digits of a random (version 4, RFC 9562 variant) UUID."""
    h = _random32()
    return f"{h[:12]}4{h[13:16]}{_VARIANT[h[16]]}{h[17:]}"


def uuid4_str() -> str:
    """A random UUID in its usual 36-character form, as str(uuid.uuid4()) gives it."""
    h = _random32()
    return f"{h[:8]}-{h[8:12]}-4{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"


def uuid7_str() -> str:
    """A time-ordered UUID (version 7, RFC 9562 variant) in its 36-character form: the
    Unix time in milliseconds, then random bits."""
    ms = f"{time.time_ns() // 1_000_000:012x}"
    h = _random32()
    return f"{ms[:8]}-{ms[8:]}-7{h[13:16]}-{_VARIANT[h[16]]}{h[17:20]}-{h[20:]}"
