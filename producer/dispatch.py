"""Writing and queueing pushes for one device or one person, many at a time.

Such a push is one Message row, one Delivery row (or a few) and a share of a deliver task.
Taken one request at a time, each would pay a transaction, a commit and a Celery publish of
its own. The dispatcher thread of each API process gathers the pushes accepted while it
wrote the previous batch (or within `publish_linger_ms`), writes them in one transaction
and publishes their Deliveries as one deliver task per lane, so batches grow with the load
by themselves. A request is answered only once its batch is committed and on the broker;
a batch the broker refuses is taken back whole (result code 3, nothing half-written).
"""

from __future__ import annotations

import os
import queue
import threading
import time
from collections import defaultdict
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import Engine, delete, insert
from sqlalchemy.exc import IntegrityError, SQLAlchemyError
from sqlmodel import col

from producer.enqueue import enqueue_deliveries
from producer.errors import Unavailable
from schemas.settings import Settings
from schemas.tables import Delivery, Message, table

log = structlog.get_logger("pushline.dispatch")


@dataclass
class Handoff:
    message: dict[str, Any]  # the Message row
    deliveries: list[dict[str, Any]]  # its QUEUED Delivery rows (none when nothing matched)
    lane: str
    done: Future[None] = field(default_factory=Future)


class Dispatcher:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.linger_s = settings.publish_linger_ms / 1000
        self.max_batch = settings.chunk_size
        self._inbox: queue.SimpleQueue[Handoff] = queue.SimpleQueue()
        self._thread = threading.Thread(target=self._run, name="pushline-dispatch", daemon=True)
        self._thread.start()

    def submit(self, handoff: Handoff) -> Future[None]:
        self._inbox.put(handoff)
        return handoff.done

    def _run(self) -> None:
        while True:
            batch = self._gather()
            try:
                self._dispatch(batch)
            except BaseException as exc:  # never leave a request waiting on a dead thread
                for h in batch:
                    if not h.done.done():
                        h.done.set_exception(exc)

    def _gather(self) -> list[Handoff]:
        batch = [self._inbox.get()]
        size = len(batch[0].deliveries)
        deadline = time.monotonic() + self.linger_s
        while size < self.max_batch:
            try:
                more = self._inbox.get(timeout=max(0.0, deadline - time.monotonic()))
            except queue.Empty:
                break
            batch.append(more)
            size += len(more.deliveries)
        return batch

    def _dispatch(self, batch: list[Handoff]) -> None:
        written = self._write(batch)
        by_lane: dict[str, list[Handoff]] = defaultdict(list)
        for h in written:
            if h.deliveries:
                by_lane[h.lane].append(h)
            else:
                h.done.set_result(None)  # nothing matched: final already, nothing to queue
        for lane, handoffs in by_lane.items():
            ids = [d["id"] for h in handoffs for d in h.deliveries]
            try:
                enqueue_deliveries(self.settings, ids, lane)
            except Exception as exc:  # kombu raises several types for a broker that is down
                self._withdraw(handoffs)
                failure = Unavailable(
                    f"the queue is unavailable (result code 3); nothing was accepted ({exc})"
                )
                for h in handoffs:
                    h.done.set_exception(failure)
                continue
            for h in handoffs:
                h.done.set_result(None)

    def _write(self, batch: list[Handoff]) -> list[Handoff]:
        """Write the batch in one transaction; returns the handoffs written (the others
        have their error set)."""
        try:
            self._insert(batch)
            return batch
        except IntegrityError:
            pass  # one of them is refused (its app deleted meanwhile?): find which
        except SQLAlchemyError as exc:
            failure = Unavailable(f"the store is unavailable; nothing was accepted ({exc})")
            for h in batch:
                h.done.set_exception(failure)
            return []
        written = []
        for h in batch:
            try:
                self._insert([h])
                written.append(h)
            except SQLAlchemyError as exc:
                h.done.set_exception(exc)
        return written

    def _insert(self, batch: list[Handoff]) -> None:
        with self.engine.begin() as conn:
            conn.execute(insert(table(Message)), [h.message for h in batch])
            rows = [d for h in batch for d in h.deliveries]
            if rows:
                conn.execute(insert(table(Delivery)), rows)

    def _withdraw(self, handoffs: list[Handoff]) -> None:
        ids = [h.message["id"] for h in handoffs]
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(table(Delivery)).where(col(Delivery.message_id).in_(ids)))
                conn.execute(delete(table(Message)).where(col(Message.id).in_(ids)))
        except SQLAlchemyError as exc:
            # The Deliveries stay QUEUED: the recovery sweep sends them after its grace.
            log.error("could not take back unqueued pushes", messages=len(ids), error=str(exc))


_dispatchers: dict[tuple[int, str, str], Dispatcher] = {}
_lock = threading.Lock()


def dispatcher_for(settings: Settings, engine: Engine) -> Dispatcher:
    """This process's dispatcher for the store and broker (a forked process gets its own)."""
    key = (os.getpid(), settings.redis_url, str(engine.url))
    found = _dispatchers.get(key)
    if found is None:
        with _lock:
            found = _dispatchers.get(key)
            if found is None:
                found = _dispatchers[key] = Dispatcher(settings, engine)
    return found
