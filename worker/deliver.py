"""Delivering one chunk: claim, build, send concurrently within the lane's rate, map answers,
decide retries by the one policy (backoff.py), record in bulk."""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import math
import queue
import time
from collections import Counter, defaultdict, deque
from collections.abc import Awaitable, Callable, Hashable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import Engine

from schemas.campaigns import CANCELLED_TEXT
from schemas.codes import DeliveryStatus, MessageState, ResultCode
from schemas.logs import shorten_token
from schemas.metrics import DELIVERIES, PROVIDER_LATENCY, RATE_LIMIT_WAITS, RETRIES
from schemas.queueing import cancelled_key
from schemas.settings import Settings
from schemas.tables import App, utcnow
from worker import store
from worker.backoff import (
    Scope,
    countdown_for,
    lane_wake_s,
    pause_schedule,
    plan_retry,
    rule_for,
)
from worker.events import outcomes_recorded
from worker.fcm import fcm_too_large
from worker.hms import prepare_hms
from worker.liveness import holding, worker_name
from worker.loop import process_loop
from worker.outcomes import Outcome, ProviderAnswer, classify
from worker.payloads import (
    ApnsRequest,
    FcmParts,
    Payload,
    WebPushRequest,
    apns_for_device,
    apns_too_large,
    build_apns,
    build_fcm,
    build_webpush,
    choose_payload,
    fcm_for_device,
    message_ttl,
    webpush_for_device,
    webpush_too_large,
)
from worker.quiet import QuietHold, recheck_s
from worker.quiet import note as quiet_note
from worker.ratelimit import (
    Grant,
    LaneState,
    lane_rate_per_minute,
    lane_state,
    sleep_for_tokens,
    task_wait_budget_s,
)
from worker.senders import (
    MissingCredentials,
    apns_sender,
    fcm_sender,
    hms_sender,
    webpush_sender,
)

log = structlog.get_logger("pushline.deliver")
_config_warned: dict[tuple[str, str], float] = {}
CONFIG_WARN_EVERY_S = 300.0

RetryEnqueuer = Callable[[list[str], float], None]
# How long answers are gathered at most before they are written (see _Stream.take).
RECORD_LINGER_S = 0.005
Answer = ProviderAnswer | Outcome
_Answered = tuple["store.ClaimedDelivery", Answer, float | None]  # with the send's latency in ms

TOO_LARGE = Outcome(
    ResultCode.PAYLOAD_TOO_LARGE,
    DeliveryStatus.ERROR,
    message="payload exceeds the provider's size limit; not sent",
)


NO_KEYS = Outcome(
    ResultCode.TOKEN_MISSING,
    DeliveryStatus.ERROR,
    message="Web Push subscription without its keys (p256dh, auth); register it again",
)

QUIET_EXPIRED = Outcome(
    ResultCode.COMMUNICATION_FAILED,
    DeliveryStatus.ERROR,
    message="expired: time to live ends within the device's quiet hours",
)

#: The Message was cancelled before this Delivery was sent: recorded CANCELLED, no code.
CANCELLED = Outcome(0, DeliveryStatus.CANCELLED, message=CANCELLED_TEXT)
#: How often a sending lane asks Redis whether its Messages were cancelled meanwhile (once
#: per lane, not per delivery: a cancelled Message stops sending within about this long).
CANCEL_POLL_S = 0.25


@dataclass
class ChunkReport:
    cancelled: int = 0
    claimed: int = 0
    codes: Counter[int] = field(default_factory=Counter)
    retried: int = 0
    skipped: int = 0
    held: int = 0  # claimed but handed back unsent: lane paused or out of tokens


def deliver_chunk(
    delivery_ids: Sequence[str],
    *,
    settings: Settings,
    engine: Engine,
    enqueue_retry: RetryEnqueuer,
) -> ChunkReport:
    started = time.monotonic()
    report = ChunkReport()
    holder = holding(settings)  # beats, so a death releases these leases
    got = store.claim(engine, delivery_ids, settings.lease_s, holder)
    claimed, leased_until = got.deliveries, got.leased_until
    report.claimed = len(claimed)
    report.skipped = len(delivery_ids) - len(claimed)
    if leased_until is not None:
        # Some rows belong to another attempt that may have died with its worker: look
        # again when its lease ends rather than sending them twice now.
        wait = max(1.0, (leased_until - utcnow()).total_seconds() + 1)
        claimed_ids = {c.id for c in claimed}
        enqueue_retry([i for i in delivery_ids if i not in claimed_ids], wait)
    if not claimed:
        return report
    with structlog.contextvars.bound_contextvars(
        chunk=str(delivery_ids[0])[-8:],  # an id's random end: its start is its time
        app=_label({c.app_id for c in claimed}),
        message=_label({c.message_id for c in claimed}),
        provider=_label({c.provider for c in claimed}),
    ):
        _deliver_claimed(got, report, started, settings, engine, enqueue_retry)
    return report


def _label(values: set[str]) -> str:
    return next(iter(values)) if len(values) == 1 else f"{len(values)} distinct"


class _Chunk:
    """What one chunk decided, collected so it is written in one go at the end."""

    def __init__(
        self,
        messages: dict[str, store.ClaimedMessage],
        settings: Settings,
        report: ChunkReport,
        engine: Engine,
        claimed: list[store.ClaimedDelivery],
    ) -> None:
        self.messages = messages
        self.settings = settings
        self.report = report
        self.engine = engine
        self.claimed = claimed
        self.message_of = {c.id: c.message_id for c in claimed}
        # This chunk's Deliveries of each Message not final yet: a Message can only be
        # closed once they are, so earlier writes need not lock and look at it.
        self.unsettled: Counter[str] = Counter(c.message_id for c in claimed)
        self.held_of = Counter(self.unsettled)  # how many of each Message's this task holds
        self.finals: list[store.Record] = []
        self.retries: list[store.Retry] = []
        self.latency_ms: dict[str, float | None] = {}  # provider latency per delivery
        self.deactivate: list[tuple[str, int]] = []
        self.retry_groups: dict[float, list[str]] = defaultdict(list)
        self.held: dict[float, list[str]] = defaultdict(list)
        self.config_errors: dict[tuple[str, str], str] = {}
        self._by_id: dict[str, store.ClaimedDelivery] = {}

    def flush(self) -> None:
        """Record what was decided since the last flush, close the Messages it finished and
        tell their waiters; called as answers arrive, not once per chunk."""
        if not (self.finals or self.retries or self.deactivate):
            return
        finals = self.finals
        touched = {self.message_of[f.id] for f in finals}
        done = {m for m in touched if not self.unsettled[m]}
        whole = {m: self.held_of[m] for m in done if self._holds_all(m)}
        store.record(self.engine, finals, self.retries, self.deactivate, done - whole.keys(), whole)
        self.finals, self.retries, self.deactivate = [], [], []
        outcomes_recorded(self.settings, self.claimed, finals)
        _count_finals(self.claimed_by_id, finals)

    def _holds_all(self, message_id: str) -> bool:
        """Every Delivery of the Message is in this task (its total is fixed once it is
        dispatched; a fan-out still running is not dispatched yet)."""
        msg = self.messages.get(message_id)
        return (
            msg is not None
            and msg.state == MessageState.DISPATCHED
            and msg.total == self.held_of[message_id]
        )

    @property
    def claimed_by_id(self) -> dict[str, store.ClaimedDelivery]:
        if len(self._by_id) != len(self.claimed):
            self._by_id = {c.id: c for c in self.claimed}
        return self._by_id

    def attempt(self, c: store.ClaimedDelivery, code: int | None, answer: str) -> dict[str, Any]:
        """This attempt as kept in the Delivery's history."""
        return {
            "at": utcnow().isoformat(),
            "code": code,
            "answer": answer[:200],
            "ms": self.latency_ms.get(c.id),
            "worker": worker_name(),
        }

    def settle(
        self,
        c: store.ClaimedDelivery,
        outcome: Outcome,
        answer: ProviderAnswer | None = None,
        wait_s: float | None = None,
    ) -> None:
        if not outcome.retry:
            self.final(c, outcome, answer)
            return
        msg = self.messages.get(c.message_id)
        now = utcnow()
        reason = answer.reason if answer else None
        plan = plan_retry(
            outcome.code,
            reason,
            c.attempts,
            max_attempts=self.settings.max_attempts,
            now=now,
            expires_at=msg.expires_at if msg else None,
            base_scale=self.settings.retry_base_s,
            cap_s=self.settings.retry_cap_s,
            retry_after=answer.retry_after if answer else None,
            wait_s=wait_s,
        )
        if not plan.retry:
            assert plan.final_code is not None
            text = f"{plan.why}: {outcome.message}"
            self.final(c, Outcome(plan.final_code, DeliveryStatus.ERROR, message=text), answer)
            return
        self.retries.append(
            (
                c.id,
                outcome.code,
                outcome.message[:500],
                now + timedelta(seconds=plan.delay_s),
                self.attempt(c, outcome.code, outcome.message),
            )
        )
        RETRIES.labels(c.provider, str(outcome.code)).inc()
        self.retry_groups[plan.delay_s].append(c.id)
        self.report.retried += 1
        self.report.codes[outcome.code] += 1
        rule = rule_for(outcome.code, reason)
        log.warning(
            "delivery retry",
            delivery=c.id,
            code=outcome.code,
            attempt=c.attempts,
            delay_s=plan.delay_s,
            reason=outcome.message,
            policy=plan.why,
            scope=rule.scope if rule else None,
        )

    def final(
        self, c: store.ClaimedDelivery, outcome: Outcome, answer: ProviderAnswer | None = None
    ) -> None:
        cancelled = outcome is CANCELLED
        self.finals.append(
            store.Record(
                id=c.id,
                status=outcome.status,
                code=None if cancelled else outcome.code,
                provider_message=outcome.message[:500] or None,
                provider_ref=answer.ref if answer else None,
                sent=outcome.status == DeliveryStatus.SENT,
                attempt=self.attempt(c, outcome.code, outcome.message or outcome.status),
            )
        )
        self.unsettled[c.message_id] -= 1
        if cancelled:
            self.report.cancelled += 1
            return
        self.report.codes[outcome.code] += 1
        if outcome.deactivate:
            self.deactivate.append((c.registration_id, outcome.code))
        if outcome.status != DeliveryStatus.ERROR:
            return
        if outcome.code == ResultCode.CONFIGURATION_EXPIRED:
            # Bad credentials fail every device alike: the app gets one loud line instead
            # (_warn_config_once); per device this is detail.
            self.config_errors[(c.app_id, c.provider)] = outcome.message
            log.debug("delivery failed", delivery=c.id, code=outcome.code, reason=outcome.message)
            return
        log.warning(
            "delivery failed",
            delivery=c.id,
            code=outcome.code,
            token=shorten_token(c.token),
            reason=outcome.message,
        )

    def hold(self, group: list[store.ClaimedDelivery], countdown: float) -> None:
        """Hand deliveries back unsent, to be looked at again after `countdown`; those whose
        time to live ends first are over now."""
        cutoff = utcnow() + timedelta(seconds=countdown)
        for c in group:
            msg = self.messages.get(c.message_id)
            if msg is not None and msg.expires_at is not None and msg.expires_at < cutoff:
                self.final(
                    c,
                    Outcome(
                        ResultCode.COMMUNICATION_FAILED,
                        DeliveryStatus.ERROR,
                        message="expired: time to live ends before the lane may send again",
                    ),
                )
            else:
                self.held[countdown].append(c.id)
                self.report.held += 1


def _deliver_claimed(
    got: store.Claim,
    report: ChunkReport,
    started: float,
    settings: Settings,
    engine: Engine,
    enqueue_retry: RetryEnqueuer,
) -> None:
    claimed, messages = got.deliveries, got.messages
    chunk = _Chunk(messages, settings, report, engine, claimed)
    now = utcnow()

    # Per (app, provider, throttled Message or None): a throttled Message sends on its own.
    sendable: dict[tuple[str, str, str | None], list[store.ClaimedDelivery]] = defaultdict(list)
    quiet = QuietHold(got.apps, now)
    for c in claimed:
        msg = messages.get(c.message_id)
        code = ResultCode.TARGET_NOT_FOUND
        if msg is None:
            text = "message is gone"
        elif msg.state == MessageState.CANCELLED:
            chunk.final(c, CANCELLED)
            continue
        elif not c.registration_id:
            text = "registration was deleted"
        elif not c.registration_active:
            code = ResultCode(c.deactivated_code or ResultCode.REGISTRATION_EXPIRED)
            text = "registration is inactive: the provider retired its token"
        elif not c.token:
            code, text = ResultCode.TOKEN_MISSING, "push token missing"
        elif msg.expires_at is not None and msg.expires_at < now:
            code = ResultCode.COMMUNICATION_FAILED
            # A retry planned within the time to live may still start just after it.
            when = f"attempt {c.attempts}" if c.attempts > 1 else "delivery"
            text = f"expired: time to live passed before {when}"
        elif quiet.holds(c, msg):
            continue
        else:
            sendable[(c.app_id, c.provider, _throttled(msg))].append(c)
            continue
        chunk.final(c, Outcome(code, DeliveryStatus.ERROR, message=text))

    _hold_quiet(chunk, quiet, enqueue_retry)
    chunk.flush()
    lanes = lane_state(settings)
    for (app_id, provider, throttled), group in sendable.items():
        throttle = None
        if throttled is not None:
            per_minute = messages[throttled].max_per_minute
            assert per_minute is not None  # _throttled says so
            throttle = (throttled, per_minute)
        _deliver_lane(chunk, got.apps.get(app_id), app_id, provider, group, lanes, throttle)
    chunk.flush()
    for countdown, ids in chunk.held.items():
        store.release(engine, ids, utcnow() + timedelta(seconds=countdown))
        enqueue_retry(ids, countdown)
    for delay, ids in chunk.retry_groups.items():
        enqueue_retry(ids, delay)
    for (app_id, provider), text in chunk.config_errors.items():
        _warn_config_once(app_id, provider, text, lanes)
    log.info(
        "chunk delivered",
        claimed=report.claimed,
        skipped=report.skipped,
        retried=report.retried,
        held=report.held,
        cancelled=report.cancelled,
        sent=report.codes.get(0, 0),
        codes={str(k): v for k, v in report.codes.items() if k != 0},
        ms=round((time.monotonic() - started) * 1000),
    )


def _hold_quiet(chunk: _Chunk, quiet: QuietHold, enqueue_retry: RetryEnqueuer) -> None:
    """Hand back the deliveries inside quiet hours, QUEUED until they end (those whose time
    to live ends first are over now, as for any hold)."""
    now = utcnow()
    for end, group in quiet.until.items():
        ids = []
        for c in group:
            msg = chunk.messages[c.message_id]
            if msg.expires_at is not None and msg.expires_at < end:
                chunk.final(c, QUIET_EXPIRED)
            else:
                ids.append(c.id)
        if ids:
            store.release(chunk.engine, ids, end, note=quiet_note(end))
            enqueue_retry(ids, recheck_s(end, now))
            chunk.report.held += len(ids)


def _throttled(msg: store.ClaimedMessage) -> str | None:
    """The Message's id when it is throttled; the priority lane never is."""
    return msg.id if msg.max_per_minute and msg.lane != "priority" else None


def _deliver_lane(
    chunk: _Chunk,
    app: App | None,
    app_id: str,
    provider: str,
    group: list[store.ClaimedDelivery],
    lanes: LaneState,
    throttle: tuple[str, int] | None = None,
) -> None:
    """Send one (app, provider) group on the process loop while this thread records the
    answers as they come (the connection never waits for SQL)."""
    settings = chunk.settings
    budget = task_wait_budget_s(settings.lease_s)
    loop = process_loop()
    stream = _Stream(loop.loop, settings.send_concurrency, len(group))
    timeout = settings.send_timeout_s * (len(group) / max(1, settings.send_concurrency) + 4)
    try:
        if app is None:
            raise MissingCredentials(f"app {app_id} no longer exists")
        future = loop.submit(
            _send_lane(
                app, provider, group, chunk.messages, settings, lanes, budget, stream, throttle
            )
        )
        over_quota = _record_as_answered(chunk, provider, stream, future, timeout + budget)
        sent = future.result()
    except MissingCredentials as exc:
        for c in group:
            chunk.final(
                c, Outcome(ResultCode.CONFIGURATION_EXPIRED, DeliveryStatus.ERROR, message=str(exc))
            )
        return
    for c, answer in sent.answers:  # decided before sending (too large, invalid data)
        _sort_answer(chunk, provider, c, answer, over_quota)
    if over_quota:
        wait = _pause_lane(app_id, provider, over_quota, settings, lanes)
        for c, outcome, answer in over_quota:
            chunk.settle(c, outcome, answer, wait_s=wait)
    if sent.held:
        countdown = lane_wake_s(sent.hold_s) if sent.paused else countdown_for(sent.hold_s)
        log.debug(
            "lane holds deliveries",
            held=len(sent.held),
            countdown_s=countdown,
            why="paused" if sent.paused else "rate",
        )
        chunk.hold(sent.held, countdown)


OverQuota = list[tuple[store.ClaimedDelivery, Outcome, ProviderAnswer]]


def _record_as_answered(
    chunk: _Chunk,
    provider: str,
    stream: _Stream,
    future: concurrent.futures.Future[_LaneSend],
    timeout_s: float,
) -> OverQuota:
    """Settle and record answers in batches of whatever arrived during the last write;
    each recorded answer frees its slot in the send window."""
    over_quota: OverQuota = []
    deadline = time.monotonic() + timeout_s
    left = stream.expected
    try:
        finished = False
        while not finished:
            answers, finished = stream.take(max(0.0, deadline - time.monotonic()), left)
            left -= len(answers)
            for c, answer, ms in answers:
                chunk.latency_ms[c.id] = ms
                _sort_answer(chunk, provider, c, answer, over_quota)
            chunk.flush()
            stream.recorded(len(answers))
    except BaseException:
        future.cancel()  # nothing may go on sending once nobody records
        raise
    return over_quota


def _sort_answer(
    chunk: _Chunk,
    provider: str,
    c: store.ClaimedDelivery,
    answer: Answer,
    over_quota: OverQuota,
) -> None:
    """Settle an answer now, or keep it for the lane's pause when the whole project is
    over its quota."""
    if isinstance(answer, Outcome):
        chunk.settle(c, answer)
        return
    outcome = classify(provider, answer)
    rule = rule_for(outcome.code, answer.reason) if outcome.retry else None
    if rule is not None and rule.scope == Scope.LANE:
        over_quota.append((c, outcome, answer))
    else:
        chunk.settle(c, outcome, answer)


def _pause_lane(
    app_id: str,
    provider: str,
    over_quota: list[tuple[store.ClaimedDelivery, Outcome, ProviderAnswer]],
    settings: Settings,
    lanes: LaneState,
) -> float:
    """Pause the (app, provider) lane for every worker; returns when its retries should wake."""
    retry_after = max((a.retry_after or 0.0 for _, _, a in over_quota), default=0.0) or None
    schedule = pause_schedule(settings.fcm_quota_pause_s, settings.retry_cap_s)
    pause = process_loop().run(lanes.pause(app_id, provider, schedule, retry_after))
    if pause is None:  # Redis unavailable: this chunk still waits as long as a pause would
        return lane_wake_s(max(schedule[0], retry_after or 0.0))
    if pause.started:
        log.warning(
            "lane paused",
            app=app_id,
            provider=provider,
            pause_s=pause.left_s,
            streak=pause.streak,
            retry_after=retry_after,
            reason=over_quota[0][2].reason,
        )
    return lane_wake_s(pause.left_s)


@dataclass
class _LaneSend:
    answers: list[tuple[store.ClaimedDelivery, Answer]]  # decided without sending
    held: list[store.ClaimedDelivery]  # not sent: the lane is paused, or tokens come too late
    hold_s: float = 0.0
    paused: bool = False


class _Stream:
    """Answers handed from the loop thread to the task's thread as they arrive.

    `window` bounds what was sent and is not yet recorded: a slot is taken before a send
    and given back once its outcome is in SQL, so a worker killed at any moment has sent
    at most `send_concurrency` notifications whose outcome it did not record.
    """

    def __init__(self, loop: asyncio.AbstractEventLoop, window: int, expected: int) -> None:
        self.loop = loop
        self.expected = expected  # at most this many answers come
        self.window = asyncio.Semaphore(window)
        self.batch = max(1, window // 2)
        # The answers of one loop step go over together: waking the task's thread (and
        # passing it the GIL) once per answer cost more than recording one.
        self._step: list[_Answered] = []
        self._answers: queue.SimpleQueue[list[_Answered] | None] = queue.SimpleQueue()

    def put(self, c: store.ClaimedDelivery, answer: Answer, ms: float | None) -> None:
        """On the loop thread."""
        if not self._step:
            self.loop.call_soon(self._hand_over)
        self._step.append((c, answer, ms))

    def _hand_over(self) -> None:
        step, self._step = self._step, []
        if step:  # close() may have handed this step over already
            self._answers.put(step)

    def close(self) -> None:
        """On the loop thread, after the last put."""
        self._hand_over()
        self._answers.put(None)

    def take(self, timeout_s: float, left: int) -> tuple[list[_Answered], bool]:
        """The answers of the next batch to record, and whether the sending ended.

        Waits for the first answers, then gathers more until half the window is waiting,
        or every answer still to come (`left`) is in, or RECORD_LINGER_S passed: each
        write is a transaction, and a small chunk's answers come close together.
        """
        try:
            first = self._answers.get(timeout=timeout_s)
        except queue.Empty:
            raise TimeoutError(f"the lane sent nothing more within {timeout_s:.0f}s") from None
        if first is None:
            return [], True
        answers = list(first)
        until = time.monotonic() + RECORD_LINGER_S
        with contextlib.suppress(queue.Empty):
            while len(answers) < min(self.batch, left):
                more = self._answers.get(timeout=max(0.0, until - time.monotonic()))
                if more is None:
                    return answers, True
                answers += more
        return answers, False

    def recorded(self, n: int) -> None:
        if n:
            self.loop.call_soon_threadsafe(self._release, n)

    def _release(self, n: int) -> None:
        for _ in range(n):
            self.window.release()


Send = Callable[[store.ClaimedDelivery], Awaitable[Answer]]


def _count_finals(
    claimed: dict[str, store.ClaimedDelivery], finals: Sequence[store.Record]
) -> None:
    counts = Counter((claimed[f.id].provider, f.status, f.code) for f in finals)
    for (provider, status, code), n in counts.items():
        DELIVERIES.labels(provider, status, "none" if code is None else str(code)).inc(n)


def _prepare(
    app: App,
    provider: str,
    group: list[store.ClaimedDelivery],
    messages: dict[str, store.ClaimedMessage],
    settings: Settings,
    decided: list[tuple[store.ClaimedDelivery, Answer]],
) -> tuple[list[store.ClaimedDelivery], Send]:
    """Build each device's request (once per distinct payload); those that cannot be sent
    go to `decided`. Returns the sendable deliveries and how to send one."""
    ready: list[store.ClaimedDelivery] = []
    now = utcnow()
    if provider == "apns":
        sender = apns_sender(app, settings)
        # Per distinct payload: the request, and whether it is too large once a notification
        # id is added (every id is a UUID of the same length, so one check serves them all).
        built: dict[Hashable, tuple[ApnsRequest, bool]] = {}
        requests: dict[str, ApnsRequest] = {}
        for c in group:
            msg = messages[c.message_id]
            choice, payload = _choose(msg, c)
            hit = built.get(choice)
            if hit is None:
                req = build_apns(payload, message_ttl(payload, msg.expires_at, now))
                hit = built[choice] = (req, apns_too_large(apns_for_device(req, c.id)))
            if hit[1]:
                decided.append((c, TOO_LARGE))
            else:
                requests[c.id] = apns_for_device(hit[0], c.id)
                ready.append(c)
        return ready, lambda c: sender.send(c.token, c.id, requests[c.id])
    if provider == "webpush":
        return _prepare_webpush(app, group, messages, settings, decided)
    if provider == "hms":
        return prepare_hms(hms_sender(app, settings), group, messages, _choose, decided)
    fsender = fcm_sender(app, settings)
    cache: dict[Hashable, FcmParts] = {}
    parts: dict[str, FcmParts] = {}
    for c in group:
        msg = messages[c.message_id]
        choice, payload = _choose(msg, c)
        ios = c.platform in ("ios", "ipados")
        part = cache.get((choice, ios))
        if part is None:
            ttl = message_ttl(payload, msg.expires_at, now)
            part = build_fcm(payload, ttl, ios=ios, now_s=int(now.timestamp()))
            cache[(choice, ios)] = part
        part = fcm_for_device(part, c.id)
        try:
            too_large = fcm_too_large(c.token, part)
        except ValueError as exc:  # firebase-admin refused a value: invalid data, code 1
            bad = Outcome(ResultCode.INVALID_DATA, DeliveryStatus.ERROR, message=str(exc)[:300])
            decided.append((c, bad))
            continue
        if too_large:
            decided.append((c, TOO_LARGE))
        else:
            parts[c.id] = part
            ready.append(c)
    return ready, lambda c: fsender.send(c.token, parts[c.id])


def _prepare_webpush(
    app: App,
    group: list[store.ClaimedDelivery],
    messages: dict[str, store.ClaimedMessage],
    settings: Settings,
    decided: list[tuple[store.ClaimedDelivery, Answer]],
) -> tuple[list[store.ClaimedDelivery], Send]:
    """Web Push requests, one build per distinct payload; too large (the encrypted size is
    the plaintext's plus a fixed overhead) or keyless subscriptions are decided here."""
    sender = webpush_sender(app, settings)
    now = utcnow()
    built: dict[Hashable, WebPushRequest] = {}
    requests: dict[str, WebPushRequest] = {}
    ready: list[store.ClaimedDelivery] = []
    for c in group:
        if c.webpush_keys is None:
            decided.append((c, NO_KEYS))
            continue
        msg = messages[c.message_id]
        choice, payload = _choose(msg, c)
        req = built.get(choice)
        if req is None:
            req = built[choice] = build_webpush(payload, message_ttl(payload, msg.expires_at, now))
        req = webpush_for_device(req, c.id)
        if webpush_too_large(req):
            decided.append((c, TOO_LARGE))
        else:
            requests[c.id] = req
            ready.append(c)

    def send(c: store.ClaimedDelivery) -> Awaitable[Answer]:
        assert c.webpush_keys is not None
        return sender.send(c.token, c.webpush_keys, requests.pop(c.id))

    return ready, send


async def _send_lane(
    app: App,
    provider: str,
    group: list[store.ClaimedDelivery],
    messages: dict[str, store.ClaimedMessage],
    settings: Settings,
    lanes: LaneState,
    budget_s: float,
    stream: _Stream,
    throttle: tuple[str, int] | None = None,
) -> _LaneSend:
    """Send what the lane's bucket allows: a slice per grant, sending while waiting for the
    next; what cannot go within the task's wait budget is handed back. Each answer goes to
    `stream` as it arrives."""
    watch: asyncio.Task[None] | None = None
    try:
        result = _LaneSend([], [])
        pending, send = _prepare(app, provider, group, messages, settings, result.answers)
        waiting: deque[store.ClaimedDelivery] = deque()
        senders: set[asyncio.Task[None]] = set()
        stopped: set[str] = set()  # Messages cancelled while this lane sends
        watch = asyncio.create_task(
            _watch_cancelled(lanes, settings, {c.message_id for c in group}, stopped)
        )

        async def sender() -> None:
            # At most send_concurrency of these take deliveries in turn: no Task per send.
            while waiting:
                await stream.window.acquire()
                if not waiting:
                    stream.window.release()
                    return
                c = waiting.popleft()
                if c.message_id in stopped:  # a set lookup: the only per-delivery cost
                    stream.put(c, CANCELLED, None)
                    continue
                t0 = time.perf_counter()
                try:
                    answer: Answer = await send(c)
                except Exception as exc:  # a sender bug must not strand the delivery unrecorded
                    log.exception("send failed", delivery=c.id)
                    answer = ProviderAnswer(None, "connection", detail=type(exc).__name__)
                took = time.perf_counter() - t0
                latency.observe(took)
                stream.put(c, answer, round(took * 1000, 2))

        def feed(batch: list[store.ClaimedDelivery]) -> None:
            waiting.extend(batch)
            for _ in range(min(settings.send_concurrency - len(senders), len(waiting))):
                task = asyncio.create_task(sender())
                senders.add(task)
                task.add_done_callback(senders.discard)

        rate = lane_rate_per_minute(app, provider, settings)
        latency = PROVIDER_LATENCY.labels(provider)
        waited = 0.0
        while pending:
            if stopped:  # no tokens for a cancelled Message's deliveries
                result.answers += [(c, CANCELLED) for c in pending if c.message_id in stopped]
                pending = [c for c in pending if c.message_id not in stopped]
                if not pending:
                    break
            grant = await _take(lanes, app.id, provider, len(pending), rate, throttle)
            if grant.granted:
                batch, pending = pending[: grant.granted], pending[grant.granted :]
                feed(batch)
            if not pending:
                break
            if grant.paused or not sleep_for_tokens(grant.wait_s, waited, budget_s):
                result.held, result.hold_s, result.paused = pending, grant.wait_s, grant.paused
                break
            RATE_LIMIT_WAITS.labels(app.id, provider).inc()
            await asyncio.sleep(max(grant.wait_s, 0.001))
            waited += grant.wait_s
        while senders:
            await asyncio.wait(set(senders))
        return result
    finally:
        if watch is not None:
            watch.cancel()
        stream.close()


async def _take(
    lanes: LaneState,
    app_id: str,
    provider: str,
    want: int,
    rate: int | None,
    throttle: tuple[str, int] | None,
) -> Grant:
    """Tokens from the Message's own bucket when it is throttled, then from the lane's: the
    app's provider rate applies on top of a campaign's throttle."""
    if throttle is not None:
        own = await lanes.take_message(throttle[0], want, throttle[1])
        if not own.granted:
            return own
        want = own.granted
    return await lanes.take(app_id, provider, want, rate)


async def _watch_cancelled(
    lanes: LaneState, settings: Settings, message_ids: set[str], stopped: set[str]
) -> None:
    """Add to `stopped` the Messages among `message_ids` cancelled meanwhile, looking every
    CANCEL_POLL_S. The first look waits too: the claim read every Message's state, so a
    lane done sooner never asks at all."""
    keys = {cancelled_key(settings, m): m for m in message_ids}
    while len(stopped) < len(message_ids):
        await asyncio.sleep(CANCEL_POLL_S)
        stopped.update(keys[k] for k in await lanes.flagged(list(keys)))


def _choose(msg: store.ClaimedMessage, c: store.ClaimedDelivery) -> tuple[Hashable, Payload]:
    """This device's payload and a cache key for it (one build per distinct payload)."""
    choice, payload = choose_payload(
        msg.payload,
        msg.target,
        username=c.username,
        global_user_ids=c.global_user_ids(),
        locale=c.locale,
        preferred_languages=c.preferred_languages,
    )
    return (c.message_id, choice), payload


def _warn_config_once(app_id: str, provider: str, text: str, lanes: LaneState) -> None:
    """Bad credentials fail every device alike: one loud line per app across all workers."""
    key = (app_id, provider)
    now = time.monotonic()
    if now - _config_warned.get(key, -math.inf) < CONFIG_WARN_EVERY_S:
        return
    _config_warned[key] = now
    first = process_loop().run(
        lanes.first_to_say(f"config:{app_id}:{provider}", CONFIG_WARN_EVERY_S)
    )
    if first:
        log.error("provider credentials rejected", app=app_id, provider=provider, reason=text)
