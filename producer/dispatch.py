"""Writing and queueing pushes for one device or one person, many at a time.

Such a push is one Message row, one Delivery row (or a few) and a share of a deliver task.
Taken one request at a time, each would pay a transaction, a commit and a Celery publish of
its own. The dispatcher thread of each API process gathers the pushes accepted while it
wrote the previous batch (or within its linger), writes them in one transaction and
publishes their Deliveries as one deliver task per lane, so batches grow with the load by
themselves. The linger itself grows while deliver tasks wait in the queue (next_linger),
and is cut short once every client connection has a push waiting (Callers).
A request is answered only once its batch is committed and on the broker; a batch the
broker refuses is taken back whole (result code 3, nothing half-written).
"""

from __future__ import annotations

import asyncio
import queue
import threading
import time
import weakref
from collections import defaultdict, deque
from collections.abc import Callable, Sequence
from concurrent.futures import Future
from dataclasses import dataclass, field
from typing import Any

import structlog
from sqlalchemy import Connection, Engine, delete, select, text
from sqlalchemy.exc import DBAPIError, IntegrityError, SQLAlchemyError
from sqlmodel import col

from producer.enqueue import enqueue_deliveries, enqueue_fanout
from producer.errors import Unavailable
from schemas import process
from schemas.audience import audience
from schemas.codes import MessageState, ResultCode
from schemas.db import Rows, among, direct, fetch_raw, insert_together, pg_array
from schemas.inbox import save_to_inbox, topic_of
from schemas.metrics import MESSAGES_ACCEPTED
from schemas.settings import Settings
from schemas.tables import NOTHING_MATCHED, Delivery, Message, Registration, delivery_rows, table

log = structlog.get_logger("pushline.accept")


@dataclass
class Handoff:
    message: dict[str, Any]  # the Message row as accepted, its target not yet resolved
    done: Future[str] = field(default_factory=Future)  # its state once written and queued
    deliveries: list[dict[str, Any]] = field(default_factory=list)
    fan_out: bool = False  # more registrations than inline_max: the fan-out task resolves
    # The submitting request's log context (its request id): the accept line carries it.
    context: dict[str, Any] | None = None  # None: the submitter logs the accept line itself
    at: float = field(default_factory=time.monotonic)  # when it was submitted


class Callers:
    """The client connections open to this process's HTTP server (producer.httpproto
    counts them; 0 where it is not that server, such as in-process calls).

    An HTTP/1.1 connection carries one request at a time. Once every open connection has a
    push waiting in the dispatcher, nothing more can join the batch until it is answered:
    a caller that waits for each answer (a service's connection pool) would only have its
    pushes delayed by the rest of the linger. Counted on the event loop, read elsewhere.
    """

    open = 0


def everyone_waits(pending: int, connections: int) -> bool:
    """Whether `pending` pushes are all the open connections can send (0: not known)."""
    return pending >= connections > 0


class Dispatcher:
    def __init__(self, settings: Settings, engine: Engine) -> None:
        self.settings = settings
        self.engine = engine
        self.floor_s = settings.publish_linger_ms / 1000
        self.ceiling_s = max(self.floor_s, settings.publish_linger_max_ms / 1000)
        self.linger_s = self.floor_s
        self.max_batch = settings.chunk_size
        self._inbox: queue.SimpleQueue[Handoff] = queue.SimpleQueue()
        self._pending = 0  # submitted and not yet taken into a batch
        self._count_lock = threading.Lock()
        self._all_in = threading.Event()  # set once every connection has a push waiting
        self._thread = threading.Thread(target=self._run, name="pushline-dispatch", daemon=True)
        self._thread.start()

    def submit(self, message: dict[str, Any], *, quiet: bool = False) -> Future[str]:
        """`quiet`: the submitter logs the accept line (the fast path, with its request's
        fields); otherwise the dispatcher logs it with the submitter's log context."""
        context = None if quiet else structlog.contextvars.get_contextvars()
        handoff = Handoff(message, context=context)
        with self._count_lock:
            self._pending += 1
            full = everyone_waits(self._pending, Callers.open)
        self._inbox.put(handoff)
        if full and not self._all_in.is_set():
            self._all_in.set()
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
        self._all_in.clear()
        # The linger counts from the oldest push's arrival: pushes that waited while the
        # previous batch was written have lingered already. It is waited through (or until
        # every connection has a push waiting), then the inbox drained: waiting on the
        # inbox instead would wake this thread (and take the GIL from the event loop) once
        # for every push.
        left = batch[0].at + self.linger_s - time.monotonic()
        if left > 0 and not everyone_waits(self._pending, Callers.open):
            self._all_in.wait(left)
        while len(batch) < self.max_batch:
            try:
                batch.append(self._inbox.get_nowait())
            except queue.Empty:
                break
        with self._count_lock:
            self._pending -= len(batch)
        return batch

    def _dispatch(self, batch: list[Handoff]) -> None:
        try:
            # One connection for the batch, each statement committing alone: resolving
            # and writing a batch are two round trips.
            with self._resolved(batch) as conn:
                written = self._write(conn, batch)
        except SQLAlchemyError as exc:  # the store is unreachable
            self._fail(batch, exc)
            return
        by_lane: dict[str, list[Handoff]] = defaultdict(list)
        for h in written:
            if h.fan_out:
                self._publish([h], enqueue_fanout, h.message["id"], h.message["lane"])
            elif h.deliveries:
                by_lane[h.message["lane"]].append(h)
            else:
                h.done.set_result(h.message["state"])  # nothing matched: final, nothing to queue
                announce_accepted(h.message, h.context)
        for lane, handoffs in by_lane.items():
            ids = [d["id"] for h in handoffs for d in h.deliveries]
            waiting = self._publish(handoffs, enqueue_deliveries, ids, lane)
            if waiting is not None:
                self.linger_s = next_linger(self.linger_s, waiting, self.floor_s, self.ceiling_s)

    def _resolved(self, batch: list[Handoff]) -> Connection:
        """A connection on which the batch's targets have been resolved. The pool hands
        connections over unpinged (schemas.db.direct); resolving only reads, so where the
        connection turns out lost (the database restarted) it is done again on a new one."""
        for last in (False, True):
            conn = direct(self.engine).connect()
            try:
                self._resolve(conn, batch)
                return conn
            except BaseException as exc:
                conn.close()  # whatever failed: the connection goes back to the pool
                lost = isinstance(exc, DBAPIError) and exc.connection_invalidated
                if last or not lost:
                    raise
        raise AssertionError("unreachable")

    def _resolve(self, conn: Connection, batch: list[Handoff]) -> None:
        """Resolve every target of the batch: registration ids in one query, other targets
        (one person, a device by user and device id) one each."""
        limit = self.settings.inline_max_deliveries
        pages = resolve_targets(conn, [h.message for h in batch], limit)
        for h, page in zip(batch, pages, strict=True):
            if page is None:
                h.fan_out = True
            else:
                h.deliveries = resolved(h.message, page)

    def _publish(
        self,
        handoffs: list[Handoff],
        publish: Callable[[Settings, Any, str], int | None],
        *args: Any,
    ) -> int | None:
        """What `publish` returns: how many tasks wait before this one (None: not known)."""
        try:
            waiting = publish(self.settings, *args)
        except Exception as exc:  # kombu raises several types for a broker that is down
            self._withdraw(handoffs)
            failure = Unavailable(
                f"the queue is unavailable (result code 3); nothing was accepted ({exc})"
            )
            for h in handoffs:
                h.done.set_exception(failure)
            return None
        for h in handoffs:
            h.done.set_result(h.message["state"])
            announce_accepted(h.message, h.context)
        return waiting

    def _fail(self, batch: list[Handoff], exc: Exception) -> None:
        failure = Unavailable(f"the store is unavailable; nothing was accepted ({exc})")
        for h in batch:
            if not h.done.done():
                h.done.set_exception(failure)

    def _write(self, conn: Connection, batch: list[Handoff]) -> list[Handoff]:
        """Write the batch at once; returns the handoffs written (the others have their
        error set: an idempotency key taken meanwhile, an app deleted)."""
        try:
            self._insert(conn, batch)
            return batch
        except IntegrityError:
            pass  # find which one is refused
        except SQLAlchemyError as exc:
            self._fail(batch, exc)
            return []
        written = []
        for h in batch:
            try:
                self._insert(conn, [h])
                written.append(h)
            except SQLAlchemyError as exc:
                h.done.set_exception(exc)
        return written

    def _insert(self, conn: Connection, batch: list[Handoff]) -> None:
        """All or nothing: on PostgreSQL one statement, which commits alone on `conn`;
        with inbox entries to save too (or on SQLite), one transaction of several."""
        parts: list[Rows] = [
            (table(Message), [h.message for h in batch], None),
            (table(Delivery), [d for h in batch for d in h.deliveries], None),
        ]
        topics = [(h, topic_of(h.message["payload"])) for h in batch if h.deliveries]
        inbox = [(h, topic) for h, topic in topics if topic is not None]
        if not inbox and conn.dialect.name == "postgresql":
            insert_together(conn, parts)
            return
        with self.engine.begin() as tx:
            insert_together(tx, parts)
            for h, topic in inbox:
                rids = [d["registration_id"] for d in h.deliveries]
                m = h.message
                save_to_inbox(tx, m["id"], m["app_id"], topic, rids, m["created_at"])

    def _withdraw(self, handoffs: list[Handoff]) -> None:
        ids = [h.message["id"] for h in handoffs]
        try:
            with self.engine.begin() as conn:
                conn.execute(delete(table(Delivery)).where(col(Delivery.message_id).in_(ids)))
                conn.execute(delete(table(Message)).where(col(Message.id).in_(ids)))
        except SQLAlchemyError as exc:
            # The Deliveries stay QUEUED: the recovery sweep sends them after its grace.
            log.error("could not take back unqueued pushes", messages=len(ids), error=str(exc))


def next_linger(linger_s: float, waiting: int, floor_s: float, ceiling_s: float) -> float:
    """The dispatcher's next linger, given how many deliver tasks waited in the queue when
    it published the last one. Waiting tasks mean the workers are behind, and each task
    costs them the same whatever it carries: gather longer, into fewer and larger tasks.
    An empty queue means they keep up: gather less, and answer sooner."""
    if waiting > 1:
        return min(ceiling_s, max(linger_s * 2, floor_s, 0.001))
    if waiting == 0:
        return max(floor_s, linger_s / 2)
    return linger_s


def resolve_targets(
    conn: Connection, messages: list[dict[str, Any]], limit: int
) -> list[list[tuple[str, str]] | None]:
    """(registration id, provider) of each Message's audience, or None where it has more
    than `limit` registrations."""
    by_id = [
        m["target"].get("registration_id") if m["target"].get("type") == "device" else None
        for m in messages
    ]
    wanted = [rid for rid in by_id if rid]
    found = {row[0]: (row[1], row[2]) for row in _registrations(conn, wanted)} if wanted else {}
    pages: list[list[tuple[str, str]] | None] = []
    for m, rid in zip(messages, by_id, strict=True):
        if rid:
            hit = found.get(rid)
            pages.append([(rid, hit[0])] if hit and hit[1] == m["app_id"] else [])
            continue
        matched = conn.execute(
            select(col(Registration.id), col(Registration.provider))
            .where(audience(m["app_id"], m["target"]))
            .limit(limit + 1)
        ).all()
        pages.append(None if len(matched) > limit else [(row[0], row[1]) for row in matched])
    return pages


# The registrations a batch names, on PostgreSQL through psycopg directly (schemas.db
# fetch_raw): SQLAlchemy's statement building and result handling cost more of the API's
# CPU than the query.
_PG_REGISTRATIONS = text(
    "SELECT id, provider, app_id FROM registration"
    " WHERE id = ANY(CAST(:ids AS text[])) AND active"
)


def _registrations(conn: Connection, ids: list[str]) -> Sequence[Sequence[Any]]:
    """(id, provider, app id) of the active registrations among `ids`."""
    if conn.dialect.name == "postgresql":
        return fetch_raw(conn, _PG_REGISTRATIONS, {"ids": pg_array(ids)})
    r = table(Registration).c
    return conn.execute(
        select(r.id, r.provider, r.app_id).where(
            among(r.id, ids, conn.dialect.name),
            r.active == True,  # noqa: E712  (SQL comparison)
        )
    ).all()


def resolved(message: dict[str, Any], page: list[tuple[str, str]]) -> list[dict[str, Any]]:
    """Mark a Message row resolved when accepted (dispatched, or failed with code 2 when
    nothing matched) and return its Delivery rows."""
    now = message["created_at"]
    if not page:
        message.update(state=MessageState.FAILED, completed_at=now)
        message.update(code=ResultCode.TARGET_NOT_FOUND, detail=NOTHING_MATCHED)
        return []
    message.update(state=MessageState.DISPATCHED, total=len(page), dispatched_at=now)
    return delivery_rows(message["id"], message["app_id"], page, now)


_dispatchers: dict[tuple[object, ...], Dispatcher] = {}
_lock = threading.Lock()


def announce_accepted(message: dict[str, Any], context: dict[str, Any] | None = None) -> None:
    """A count and one INFO line per accepted push (once it is durable and queued); no line
    for a quiet push (context None), whose submitter logs it."""
    kind = str(message["target"].get("type", "?"))
    MESSAGES_ACCEPTED.labels(message["app_id"], kind, message["lane"]).inc()
    if context is not None:
        log_accepted(message, context)


def log_accepted(message: dict[str, Any], context: dict[str, Any]) -> None:
    kind = str(message["target"].get("type", "?"))
    log.info(
        "push accepted",
        **context,
        message=message["id"],
        app=message["app_id"],
        target=kind,
        lane=message["lane"],
        state=message["state"],
    )


def dispatcher_for(settings: Settings, engine: Engine) -> Dispatcher:
    """This process's dispatcher for the store and broker (a forked process gets its own)."""
    key = (
        process.pid(),
        settings.redis_url,
        settings.redis_key_prefix,
        settings.priority_lane,
        settings.inline_max_deliveries,
        settings.publish_linger_ms,
        settings.publish_linger_max_ms,
        engine,  # the engine itself: its URL as text costs more than this lookup should
    )
    found = _dispatchers.get(key)
    if found is None:
        with _lock:
            found = _dispatchers.get(key)
            if found is None:
                found = _dispatchers[key] = Dispatcher(settings, engine)
    return found


class _LoopWaker:
    """Dispatcher results handed to one event loop a batch at a time.

    `asyncio.wrap_future` wakes the loop (a write to its self-pipe, a system call) once per
    future; a batch of a hundred pushes finishing together would wake it a hundred times.
    Here the first result of a batch schedules one drain and the rest join it.

    A waiter not settled within `timeout_s` fails with TimeoutError. One timer serves every
    waiter: an `asyncio.timeout` per request (a timer in the loop's heap, cancelled on
    exit) cost a twentieth of the API's CPU for a single-device push.
    """

    SWEEP_S = 1.0  # how late, at most, a waiter past its deadline fails

    def __init__(self, loop: asyncio.AbstractEventLoop, timeout_s: float) -> None:
        self.loop = loop
        self.timeout_s = timeout_s
        self._ready: list[tuple[Future[str], asyncio.Future[str]]] = []
        self._lock = threading.Lock()
        # (deadline, waiter) in the order watched: one timeout for all, so deadline order.
        self._waiting: deque[tuple[float, asyncio.Future[str]]] = deque()
        self._sweep: asyncio.TimerHandle | None = None

    def watch(self, done: Future[str]) -> asyncio.Future[str]:
        """On the loop: an asyncio future settled as `done` is."""
        waiter: asyncio.Future[str] = self.loop.create_future()
        done.add_done_callback(lambda f: self._settled(f, waiter))
        self._waiting.append((self.loop.time() + self.timeout_s, waiter))
        if self._sweep is None:
            self._sweep = self.loop.call_later(self.SWEEP_S, self._expire)
        return waiter

    def _expire(self) -> None:
        """Forget settled waiters and fail those past their deadline."""
        now = self.loop.time()
        waiting = self._waiting
        while waiting and (waiting[0][1].done() or waiting[0][0] <= now):
            _, waiter = waiting.popleft()
            if not waiter.done():
                waiter.set_exception(TimeoutError())
        self._sweep = self.loop.call_later(self.SWEEP_S, self._expire) if waiting else None

    def _settled(self, done: Future[str], waiter: asyncio.Future[str]) -> None:
        with self._lock:
            self._ready.append((done, waiter))
            if len(self._ready) > 1:
                return  # a drain is already scheduled
        self.loop.call_soon_threadsafe(self._drain)

    def _drain(self) -> None:
        with self._lock:
            ready, self._ready = self._ready, []
        for done, waiter in ready:
            if waiter.done():  # its request gave up waiting, or its deadline passed
                continue
            exc = done.exception()
            if exc is not None:
                waiter.set_exception(exc)
            else:
                waiter.set_result(done.result())


_wakers: weakref.WeakKeyDictionary[asyncio.AbstractEventLoop, _LoopWaker] = (
    weakref.WeakKeyDictionary()
)


def on_loop(done: Future[str], timeout_s: float) -> asyncio.Future[str]:
    """`done` as an asyncio future of the running loop, woken once per dispatcher batch;
    it fails with TimeoutError when `done` is not settled within `timeout_s` (one timeout
    per loop: the first call's)."""
    loop = asyncio.get_running_loop()
    waker = _wakers.get(loop)
    if waker is None:
        waker = _wakers[loop] = _LoopWaker(loop, timeout_s)
    return waker.watch(done)
