"""The garbage collector kept off a long-running process's start-up objects.

A process of Pushline holds a few hundred thousand long-lived objects once it has started
(SQLAlchemy's tables, pydantic's validators, FastAPI's routes, Celery's tasks). Python's
oldest-generation collection walks all of them, about 50-80 ms on a 2-core host, and the
process stops meanwhile: one API process answered a whole batch of pushes 80 ms late each
time. Frozen, they are skipped by every collection; what the process makes afterwards is
collected as usual.
"""

from __future__ import annotations

import gc


def settle_heap() -> None:
    """Collect what start-up left behind, then freeze the rest (call it once started)."""
    gc.collect()
    gc.freeze()
