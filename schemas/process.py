"""This process's id, kept rather than asked for.

`os.getpid()` is a system call, and Pushline asks it on hot paths only to notice a fork
(a forked child must not share its parent's sockets, loop or metrics file). The id kept
here is renewed in every child forked through Python (`os.fork`, multiprocessing,
Celery's prefork pool), so comparing against it notices the same forks.
"""

from __future__ import annotations

import os

_pid = os.getpid()


def _renew() -> None:
    global _pid
    _pid = os.getpid()


os.register_at_fork(after_in_child=_renew)


def pid() -> int:
    return _pid
