"""Delivering one chunk: claim, build, send concurrently, map answers, record in bulk."""

from __future__ import annotations

import asyncio
import math
import time
from collections import Counter, defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import timedelta
from typing import Any

import structlog
from sqlalchemy import Engine

from schemas.codes import DeliveryStatus, ResultCode
from schemas.logs import shorten_token
from schemas.settings import Settings
from schemas.tables import App, Message, utcnow
from worker import store
from worker.backoff import exhausted_code, retry_delay
from worker.fcm import fcm_too_large
from worker.loop import process_loop
from worker.outcomes import Outcome, ProviderAnswer, classify
from worker.payloads import ApnsRequest, apns_too_large, build_apns, build_fcm
from worker.senders import MissingCredentials, apns_sender, fcm_sender, load_app

log = structlog.get_logger("pushline.deliver")
_config_warned: dict[tuple[str, str], float] = {}
CONFIG_WARN_EVERY_S = 300.0

RetryEnqueuer = Callable[[list[str], float], None]


@dataclass
class ChunkReport:
    claimed: int = 0
    codes: Counter[int] = field(default_factory=Counter)
    retried: int = 0
    skipped: int = 0


def deliver_chunk(
    delivery_ids: Sequence[str],
    *,
    settings: Settings,
    engine: Engine,
    enqueue_retry: RetryEnqueuer,
) -> ChunkReport:
    started = time.monotonic()
    report = ChunkReport()
    claimed, leased_until = store.claim(engine, delivery_ids, settings.lease_s)
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
        chunk=str(delivery_ids[0])[:8],
        app=_label({c.app_id for c in claimed}),
        message=_label({c.message_id for c in claimed}),
        provider=_label({c.provider for c in claimed}),
    ):
        _deliver_claimed(claimed, report, started, settings, engine, enqueue_retry)
    return report


def _label(values: set[str]) -> str:
    return next(iter(values)) if len(values) == 1 else f"{len(values)} distinct"


def _deliver_claimed(
    claimed: list[store.ClaimedDelivery],
    report: ChunkReport,
    started: float,
    settings: Settings,
    engine: Engine,
    enqueue_retry: RetryEnqueuer,
) -> None:
    messages = store.load_messages(engine, {c.message_id for c in claimed})
    finals: list[store.Record] = []
    retries: list[tuple[str, int, str, Any]] = []
    deactivate: list[tuple[str, int]] = []
    retry_groups: dict[int, list[str]] = defaultdict(list)
    now = utcnow()

    def settle(c: store.ClaimedDelivery, outcome: Outcome, answer: ProviderAnswer | None) -> None:
        if outcome.retry and c.attempts < settings.max_attempts:
            msg = messages.get(c.message_id)
            delay = retry_delay(
                outcome.code,
                c.attempts,
                base_scale=settings.retry_base_s,
                cap_s=settings.retry_cap_s,
                retry_after=answer.retry_after if answer else None,
            )
            if (
                msg is not None
                and msg.expires_at is not None
                and now + timedelta(seconds=delay) > msg.expires_at
            ):
                outcome = Outcome(
                    ResultCode.COMMUNICATION_FAILED,
                    DeliveryStatus.ERROR,
                    message=f"expired: time to live ends before the next try ({outcome.message})",
                )
            else:
                retries.append(
                    (c.id, outcome.code, outcome.message[:500], now + timedelta(seconds=delay))
                )
                retry_groups[math.ceil(delay)].append(c.id)
                report.retried += 1
                report.codes[outcome.code] += 1
                log.warning(
                    "delivery retry",
                    delivery=c.id,
                    code=outcome.code,
                    attempt=c.attempts,
                    delay_s=round(delay, 2),
                    reason=outcome.message,
                )
                return
        elif outcome.retry:
            outcome = Outcome(
                exhausted_code(outcome.code),
                DeliveryStatus.ERROR,
                message=f"gave up after {c.attempts} attempts: {outcome.message}",
            )
        finals.append(
            store.Record(
                id=c.id,
                status=outcome.status,
                code=outcome.code,
                provider_message=outcome.message[:500] or None,
                provider_ref=answer.ref if answer else None,
                sent=outcome.status == DeliveryStatus.SENT,
            )
        )
        report.codes[outcome.code] += 1
        if outcome.deactivate:
            deactivate.append((c.registration_id, outcome.code))
        if outcome.status == DeliveryStatus.ERROR:
            log.warning(
                "delivery failed",
                delivery=c.id,
                code=outcome.code,
                token=shorten_token(c.token),
                reason=outcome.message,
            )

    sendable: dict[tuple[str, str], list[store.ClaimedDelivery]] = defaultdict(list)
    for c in claimed:
        msg = messages.get(c.message_id)
        if msg is None:
            settle(
                c,
                Outcome(
                    ResultCode.TARGET_NOT_FOUND, DeliveryStatus.ERROR, message="message is gone"
                ),
                None,
            )
        elif not c.registration_id:
            settle(
                c,
                Outcome(
                    ResultCode.TARGET_NOT_FOUND,
                    DeliveryStatus.ERROR,
                    message="registration was deleted",
                ),
                None,
            )
        elif not c.registration_active:
            code = c.deactivated_code or ResultCode.REGISTRATION_EXPIRED
            settle(
                c,
                Outcome(
                    code,
                    DeliveryStatus.ERROR,
                    message="registration is inactive: the provider retired its token",
                ),
                None,
            )
        elif not c.token:
            settle(
                c,
                Outcome(
                    ResultCode.TOKEN_MISSING, DeliveryStatus.ERROR, message="push token missing"
                ),
                None,
            )
        elif msg.expires_at is not None and msg.expires_at < now:
            settle(
                c,
                Outcome(
                    ResultCode.COMMUNICATION_FAILED,
                    DeliveryStatus.ERROR,
                    message="expired: time to live passed before delivery",
                ),
                None,
            )
        else:
            sendable[(c.app_id, c.provider)].append(c)

    for (app_id, provider), group in sendable.items():
        try:
            app = load_app(engine, app_id)
            answers = process_loop().run(
                _send_group(app, provider, group, messages, settings),
                timeout=settings.send_timeout_s
                * (len(group) / max(1, settings.send_concurrency) + 4),
            )
        except MissingCredentials as exc:
            _warn_config_once(app_id, provider, str(exc))
            for c in group:
                settle(
                    c,
                    Outcome(
                        ResultCode.CONFIGURATION_EXPIRED, DeliveryStatus.ERROR, message=str(exc)
                    ),
                    None,
                )
            continue
        for c, answer in zip(group, answers, strict=True):
            if isinstance(answer, Outcome):
                settle(c, answer, None)
                continue
            outcome = classify(provider, answer)
            if outcome.code == ResultCode.CONFIGURATION_EXPIRED:
                _warn_config_once(app_id, provider, outcome.message)
            settle(c, outcome, answer)

    store.record(engine, finals, retries, deactivate)
    for delay, ids in retry_groups.items():
        enqueue_retry(ids, float(delay))
    store.finish_if_done(engine, messages.keys())
    log.info(
        "chunk delivered",
        claimed=report.claimed,
        skipped=report.skipped,
        retried=report.retried,
        sent=report.codes.get(0, 0),
        codes={str(k): v for k, v in report.codes.items() if k != 0},
        ms=round((time.monotonic() - started) * 1000),
    )


def _warn_config_once(app_id: str, provider: str, text: str) -> None:
    """Bad credentials fail every device alike: one loud line per app, not one per device."""
    key = (app_id, provider)
    now = time.monotonic()
    if now - _config_warned.get(key, -math.inf) >= CONFIG_WARN_EVERY_S:
        _config_warned[key] = now
        log.error("provider credentials rejected", app=app_id, provider=provider, reason=text)


async def _send_group(
    app: App,
    provider: str,
    group: list[store.ClaimedDelivery],
    messages: dict[str, Message],
    settings: Settings,
) -> list[ProviderAnswer | Outcome]:
    too_large = Outcome(
        ResultCode.PAYLOAD_TOO_LARGE,
        DeliveryStatus.ERROR,
        message="payload exceeds the provider's size limit; not sent",
    )
    if provider == "apns":
        sender = apns_sender(app, settings)
        built: dict[str, ApnsRequest] = {}
        sem = asyncio.Semaphore(settings.send_concurrency)

        async def one(c: store.ClaimedDelivery) -> ProviderAnswer | Outcome:
            req = built.get(c.message_id)
            if req is None:
                req = built[c.message_id] = build_apns(messages[c.message_id].payload)
            if apns_too_large(req):
                return too_large
            async with sem:
                return await sender.send(c.token, c.id, req)

        return list(await asyncio.gather(*(one(c) for c in group)))

    fsender = fcm_sender(app, settings)
    parts = {mid: build_fcm(m.payload) for mid, m in messages.items()}
    results: list[ProviderAnswer | Outcome] = [too_large] * len(group)
    fits = [i for i, c in enumerate(group) if not fcm_too_large(c.token, parts[c.message_id])]
    answers = await fsender.send_many([(group[i].token, parts[group[i].message_id]) for i in fits])
    for i, answer in zip(fits, answers, strict=True):
        results[i] = answer
    return results
