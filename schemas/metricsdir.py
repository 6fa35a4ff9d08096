"""Where prometheus-client's multiprocess mode keeps its files.

prometheus-client picks its value store when it is first imported, so a process tree's
directory must be set before anything imports it: entry points call `prepare` first.
"""

from __future__ import annotations

import atexit
import os
import shutil
import tempfile
from pathlib import Path

MULTIPROC_ENV = "PROMETHEUS_MULTIPROC_DIR"


def prepare(role: str) -> Path:
    """Give a process tree its own, empty multiprocess directory before any metric is
    written (call it in the parent, before children are forked or spawned)."""
    given = os.environ.get(MULTIPROC_ENV)
    if not given:
        path = Path(tempfile.mkdtemp(prefix=f"pushline-{role}-metrics-"))
        atexit.register(shutil.rmtree, path, True)
        os.environ[MULTIPROC_ENV] = str(path)
        return path
    path = Path(given)
    if given and path.exists():
        shutil.rmtree(path, ignore_errors=True)  # counts of an earlier run would add up
    path.mkdir(parents=True, exist_ok=True)
    os.environ[MULTIPROC_ENV] = str(path)
    return path
