"""Random version-4 UUIDs, drawn from the kernel's CSPRNG 4 KiB at a time.

`uuid.uuid4()` makes one getrandom system call per id. A single-device push takes three
or four ids (its Message, its Delivery, the request, the task), and on a loaded VM each
call cost several microseconds: about 9 % of the API's CPU per push. Here one call
serves 256 ids. The bytes are the same os.urandom bytes; only the batching differs.

The buffer is emptied in a forked child (a Celery pool process, a uvicorn worker), so no
two processes ever hand out the same bytes, and a lock keeps threads from sharing them.
"""

from __future__ import annotations

import os
import threading

_DRAW = 4096  # bytes per system call: 256 ids
_lock = threading.Lock()
_buffer = b""
_at = 0


def _forget() -> None:
    global _buffer, _at, _lock
    _buffer, _at, _lock = b"", 0, threading.Lock()


os.register_at_fork(after_in_child=_forget)


def _random16() -> bytes:
    global _buffer, _at
    with _lock:
        if _at + 16 > len(_buffer):
            _buffer, _at = os.urandom(_DRAW), 0
        chunk = _buffer[_at : _at + 16]
        _at += 16
    return chunk


def uuid4_hex() -> str:
    """32 hex digits of a random (version 4, RFC 9562 variant) UUID."""
    raw = bytearray(_random16())
    raw[6] = (raw[6] & 0x0F) | 0x40
    raw[8] = (raw[8] & 0x3F) | 0x80
    return raw.hex()


def uuid4_str() -> str:
    """A random UUID in its usual 36-character form, as str(uuid.uuid4()) gives it."""
    h = uuid4_hex()
    return f"{h[:8]}-{h[8:12]}-{h[12:16]}-{h[16:20]}-{h[20:]}"
