"""State shared by both simulators: scripts, configuration, counters, captured requests.

Each simulator supplies a reason table (provider reason -> HTTP status); everything else
(scripting, outages, error rates, quotas, stats, the /control routes) is identical, so
tests and benchmarks drive APNs and FCM the same way.
"""

from __future__ import annotations

import json
import math
import random
import socket
import struct
import time
from collections import deque
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field, fields
from typing import Any

from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

#: How many requests per token /control/requests keeps.
CAPTURE_PER_TOKEN = 20
#: Bound on tokens with captured requests, so a million-device benchmark cannot exhaust memory.
CAPTURE_MAX_TOKENS = 200_000
REDACTED = "<redacted>"


class ControlError(ValueError):
    """A bad control request; answered with 400 and the message."""


@dataclass
class SimConfig:
    latency_ms: int = 0
    outage: str | None = None
    error_rate: float = 0.0
    error_reason: str | None = None
    retry_after: int | None = None
    quota_per_minute: int | None = None
    # The project quota is counted in fixed windows of this many seconds (a pro-rata share
    # of quota_per_minute each), so a test can exercise a rate limit in seconds, not minutes.
    quota_window_s: int = 60
    device_rate_per_minute: int | None = None
    capture_requests: bool = True

    def as_dict(self) -> dict[str, Any]:
        return {f.name: getattr(self, f.name) for f in fields(self)}


@dataclass
class _Script:
    responses: deque[str]
    then: str | None


@dataclass
class Decision:
    """A non-success outcome chosen by scripts/config, with an optional Retry-After."""

    reason: str
    retry_after: int | None = None


@dataclass
class _Window:
    """A fixed counting window, one minute unless told (cheap; exactness is not the point)."""

    index: int = -1
    counts: dict[str, int] = field(default_factory=dict)

    def hit(self, key: str, now: float, length: int = 60) -> tuple[int, int]:
        index = int(now // length)
        if index != self.index:
            self.index = index
            self.counts.clear()
        n = self.counts.get(key, 0) + 1
        self.counts[key] = n
        # Seconds until the window rolls over, for Retry-After.
        return n, max(1, int((index + 1) * length - now + 0.999))


class SimState:
    """Outcome decisions and bookkeeping for one simulator process."""

    def __init__(
        self,
        reasons: Mapping[str, int],
        *,
        quota_reason: str,
        device_rate_reason: str,
        default_error_reason: str,
    ) -> None:
        self.reasons = dict(reasons)
        self.quota_reason = quota_reason
        self.device_rate_reason = device_rate_reason
        self.default_error_reason = default_error_reason
        # Called when a refusal begins: each server drops its live provider connections.
        self.droppers: list[Callable[[], None]] = []
        self.reset()

    # -- control -----------------------------------------------------------------------

    def reset(self) -> None:
        self.config = SimConfig()
        self._scripts: dict[str, _Script] = {}
        self._prefix_scripts: list[tuple[str, str]] = []  # (prefix, reason), longest first
        self._quota = _Window()
        self._device = _Window()
        self.requests_total = 0
        self.accepted_total = 0
        self.rejected_total = 0
        self.validated_total = 0
        self.duplicates = 0
        self.accepted: dict[str, int] = {}
        self.rejected: dict[str, int] = {}
        self._captured: dict[str, deque[dict[str, Any]]] = {}
        self._refuse_until = 0.0  # time.monotonic(); math.inf: until lifted
        self._refuse_next = 0
        self.refused_total = 0

    # -- refused connections -------------------------------------------------------------

    def refuse(
        self,
        *,
        until_lifted: bool | None = None,
        for_s: float | None = None,
        attempts: int | None = None,
    ) -> dict[str, Any]:
        """Refuse new provider connections: every one until lifted, for `for_s` seconds, or
        the next `attempts`; `until_lifted=False` lifts any refusal. Beginning one drops the
        live connections, so a client must connect again, and is refused."""
        given = [v for v in (until_lifted, for_s, attempts) if v is not None]
        if len(given) != 1:
            raise ControlError("give exactly one of until_lifted, for_s, attempts")
        if until_lifted is not None:
            if not isinstance(until_lifted, bool):
                raise ControlError("until_lifted must be true or false")
            self._refuse_until = math.inf if until_lifted else 0.0
            self._refuse_next = 0
        elif for_s is not None:
            if not _number(for_s) or not 0 < for_s <= 3600:
                raise ControlError("for_s must be a number of seconds within (0, 3600]")
            self._refuse_until = time.monotonic() + float(for_s)
        elif attempts is not None:
            if not _number(attempts) or not isinstance(attempts, int) or attempts < 1:
                raise ControlError("attempts must be a whole number of at least 1")
            self._refuse_next = attempts
        if self.refusing():
            for drop in self.droppers:
                drop()
        return self.refusal()

    def refusing(self) -> bool:
        return self._refuse_next > 0 or time.monotonic() < self._refuse_until

    def refuse_connection(self) -> bool:
        """Whether to refuse the connection being accepted now (counts it when so)."""
        if self._refuse_next > 0:
            self._refuse_next -= 1
        elif time.monotonic() >= self._refuse_until:
            return False
        self.refused_total += 1
        return True

    def refusal(self) -> dict[str, Any]:
        left = self._refuse_until - time.monotonic()
        return {
            "refusing": self.refusing(),
            "until_lifted": self._refuse_until == math.inf,
            "for_s": round(left, 3) if 0 < left < math.inf else None,
            "attempts": self._refuse_next,
            "refused_total": self.refused_total,
        }

    def _check_reason(self, reason: Any, what: str) -> str:
        if not isinstance(reason, str) or reason not in self.reasons:
            known = ", ".join(sorted(self.reasons))
            raise ControlError(f"{what}: unknown reason {reason!r}; known: {known}")
        return reason

    def script(
        self,
        token: str | None = None,
        token_prefix: str | None = None,
        responses: list[str] | tuple[str, ...] = (),
        then: str | None = None,
    ) -> None:
        if (token is None) == (token_prefix is None):
            raise ControlError("give exactly one of token, token_prefix")
        checked = [self._check_reason(r, "responses") for r in responses]
        if then is not None:
            self._check_reason(then, "then")
        if token is not None:
            if not checked and then is None:
                self._scripts.pop(token, None)
            else:
                self._scripts[token] = _Script(deque(checked), then)
            return
        assert token_prefix is not None
        if checked:
            # A prefix names an open-ended family; per-token sequences would need per-token
            # cursors for tokens nobody listed, so only the sticky outcome is supported.
            raise ControlError("token_prefix scripts take only 'then', not 'responses'")
        rest = [(p, r) for p, r in self._prefix_scripts if p != token_prefix]
        if then is not None:
            rest.append((token_prefix, then))
        self._prefix_scripts = sorted(rest, key=lambda pr: len(pr[0]), reverse=True)

    def configure(self, updates: Mapping[str, Any]) -> SimConfig:
        known = {f.name for f in fields(SimConfig)}
        unknown = set(updates) - known
        if unknown:
            raise ControlError(f"unknown config keys: {sorted(unknown)}")
        cfg = SimConfig(**{**self.config.as_dict(), **updates})
        if cfg.outage is not None:
            self._check_reason(cfg.outage, "outage")
        if cfg.error_reason is not None:
            self._check_reason(cfg.error_reason, "error_reason")
        if not 0.0 <= float(cfg.error_rate) <= 1.0:
            raise ControlError("error_rate must be within 0..1")
        for name in ("latency_ms", "retry_after", "quota_per_minute", "device_rate_per_minute"):
            value = getattr(cfg, name)
            if value is not None and (not isinstance(value, int) or value < 0):
                raise ControlError(f"{name} must be a non-negative integer or null")
        if not isinstance(cfg.quota_window_s, int) or not 1 <= cfg.quota_window_s <= 60:
            raise ControlError("quota_window_s must be an integer within 1..60")
        if cfg.quota_window_s != self.config.quota_window_s:
            self._quota = _Window()  # counts from windows of another length mean nothing
        if not isinstance(cfg.latency_ms, int):
            raise ControlError("latency_ms must be an integer")
        cfg.error_rate = float(cfg.error_rate)
        self.config = cfg
        return cfg

    # -- the request path ---------------------------------------------------------------

    def decide(self, token: str, quota_key: str) -> Decision | None:
        """The scripted/configured outcome for this request, or None for success."""
        cfg = self.config
        if cfg.outage is not None:
            return Decision(cfg.outage, cfg.retry_after)
        script = self._scripts.get(token)
        if script is not None:
            if script.responses:
                return Decision(script.responses.popleft(), cfg.retry_after)
            if script.then is not None:
                return Decision(script.then, cfg.retry_after)
            del self._scripts[token]  # exhausted, no sticky outcome: plain success from now on
        for prefix, reason in self._prefix_scripts:
            if token.startswith(prefix):
                return Decision(reason, cfg.retry_after)
        if cfg.error_rate and random.random() < cfg.error_rate:
            return Decision(cfg.error_reason or self.default_error_reason, cfg.retry_after)
        if cfg.quota_per_minute is not None or cfg.device_rate_per_minute is not None:
            now = time.time()
            if cfg.quota_per_minute is not None:
                n, wait = self._quota.hit(quota_key, now, cfg.quota_window_s)
                if n > cfg.quota_per_minute * cfg.quota_window_s / 60:
                    return Decision(self.quota_reason, cfg.retry_after or wait)
            if cfg.device_rate_per_minute is not None:
                n, wait = self._device.hit(token, now)
                if n > cfg.device_rate_per_minute:
                    return Decision(self.device_rate_reason, cfg.retry_after or wait)
        return None

    def record(
        self,
        token: str,
        outcome: str,
        headers: Callable[[], dict[str, str]] | None = None,
        body: Any = None,
    ) -> None:
        """Count one answered request; `outcome` is "accepted", "validated" or a reason."""
        self.requests_total += 1
        if outcome == "accepted":
            self.accepted_total += 1
            n = self.accepted.get(token, 0)
            if n:
                self.duplicates += 1
            self.accepted[token] = n + 1
        elif outcome == "validated":
            self.validated_total += 1
        else:
            self.rejected_total += 1
            self.rejected[outcome] = self.rejected.get(outcome, 0) + 1
        if not self.config.capture_requests or headers is None:
            return
        captured = self._captured.get(token)
        if captured is None:
            if len(self._captured) >= CAPTURE_MAX_TOKENS:
                # Drop the oldest token's history (dicts keep insertion order).
                del self._captured[next(iter(self._captured))]
            captured = self._captured[token] = deque(maxlen=CAPTURE_PER_TOKEN)
        # Headers are built lazily so the fast path with capture off pays nothing.
        captured.append({"headers": headers(), "body": body, "outcome": outcome})

    def stats(self) -> dict[str, Any]:
        return {
            "requests_total": self.requests_total,
            "accepted_total": self.accepted_total,
            "rejected_total": self.rejected_total,
            "validated_total": self.validated_total,
            "accepted": dict(self.accepted),
            "rejected": dict(self.rejected),
            "duplicates": self.duplicates,
            "refused_total": self.refused_total,
        }

    def captured(self, token: str) -> list[dict[str, Any]]:
        return list(self._captured.get(token, ()))


def _number(value: Any) -> bool:
    return isinstance(value, int | float) and not isinstance(value, bool)


def reset_connection(conn: socket.socket) -> None:
    """Close an accepted socket with a TCP reset, before any TLS: to the client, the
    provider could not be reached (the port stays open so that attempts can be counted)."""
    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    conn.close()


def parse_body_json(raw: bytes) -> Any:
    """Best-effort parse for capture: JSON if possible, else the text."""
    try:
        return json.loads(raw)
    except ValueError:
        return raw.decode("utf-8", "replace")


Handler = Callable[[dict[str, Any]], None]


def control_routes(state: SimState, registrations: Mapping[str, Handler]) -> list[Route]:
    """The /control/* routes; `registrations` maps extra POST paths (keys, accounts)."""

    async def _json(request: Request) -> dict[str, Any]:
        raw = await request.body()
        if not raw.strip():
            return {}
        data = json.loads(raw)
        if not isinstance(data, dict):
            raise ControlError("body must be a JSON object")
        return data

    def _guard(
        fn: Callable[[Request], Awaitable[Response]],
    ) -> Callable[[Request], Awaitable[Response]]:
        async def wrapped(request: Request) -> Response:
            try:
                return await fn(request)
            except (ControlError, ValueError, TypeError, KeyError) as exc:
                return JSONResponse({"error": str(exc)}, status_code=400)

        return wrapped

    async def health(_: Request) -> Response:
        return JSONResponse({"ok": True})

    async def reset(_: Request) -> Response:
        state.reset()
        return JSONResponse({"ok": True})

    async def script(request: Request) -> Response:
        data = await _json(request)
        extra = set(data) - {"token", "token_prefix", "responses", "then"}
        if extra:
            raise ControlError(f"unknown keys: {sorted(extra)}")
        state.script(
            token=data.get("token"),
            token_prefix=data.get("token_prefix"),
            responses=list(data.get("responses") or ()),
            then=data.get("then"),
        )
        return JSONResponse({"ok": True})

    async def config(request: Request) -> Response:
        cfg = state.configure(await _json(request))
        return JSONResponse(cfg.as_dict())

    async def get_config(_: Request) -> Response:
        return JSONResponse(state.config.as_dict())

    async def stats(_: Request) -> Response:
        return JSONResponse(state.stats())

    async def refuse(request: Request) -> Response:
        data = await _json(request)
        extra = set(data) - {"until_lifted", "for_s", "attempts"}
        if extra:
            raise ControlError(f"unknown keys: {sorted(extra)}")
        return JSONResponse(state.refuse(**data))

    async def refusal(_: Request) -> Response:
        return JSONResponse(state.refusal())

    async def requests(request: Request) -> Response:
        token = request.query_params.get("token")
        if token is None:
            raise ControlError("token query parameter required")
        return JSONResponse(state.captured(token))

    def _registration(handler: Handler) -> Callable[[Request], Awaitable[Response]]:
        async def endpoint(request: Request) -> Response:
            handler(await _json(request))
            return JSONResponse({"ok": True})

        return endpoint

    routes = [
        Route("/control/health", _guard(health), methods=["GET"]),
        Route("/control/reset", _guard(reset), methods=["POST"]),
        Route("/control/script", _guard(script), methods=["POST"]),
        Route("/control/config", _guard(config), methods=["POST"]),
        Route("/control/config", _guard(get_config), methods=["GET"]),
        Route("/control/stats", _guard(stats), methods=["GET"]),
        Route("/control/refuse", _guard(refuse), methods=["POST"]),
        Route("/control/refuse", _guard(refusal), methods=["GET"]),
        Route("/control/requests", _guard(requests), methods=["GET"]),
    ]
    for path, handler in registrations.items():
        routes.append(Route(path, _guard(_registration(handler)), methods=["POST"]))
    return routes


def load_public_key_pem(data: Mapping[str, Any]) -> bytes:
    """Public key PEM from `public_key_pem`, or derived from `private_key_pem`."""
    from cryptography.hazmat.primitives import serialization

    if data.get("public_key_pem"):
        pem = str(data["public_key_pem"]).encode()
        serialization.load_pem_public_key(pem)  # validate early: fail at registration time
        return pem
    if data.get("private_key_pem"):
        key = serialization.load_pem_private_key(str(data["private_key_pem"]).encode(), None)
        return key.public_key().public_bytes(
            serialization.Encoding.PEM, serialization.PublicFormat.SubjectPublicKeyInfo
        )
    raise ControlError("public_key_pem or private_key_pem required")


class OAuthH2State(SimState):
    """SimState plus what the OAuth providers over HTTP/2 (FCM, Push Kit) count: tokens
    issued, connections and requests, so a test can prove a client reused one token and one
    connection."""

    def reset(self) -> None:
        super().reset()
        self.tokens_issued = 0
        self.h2_connections = 0
        self.h2_requests = 0

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "tokens_issued": self.tokens_issued,
            "h2_connections": self.h2_connections,
            "h2_requests": self.h2_requests,
        }
