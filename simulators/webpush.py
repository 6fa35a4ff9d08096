"""A fake browser push service (RFC 8030 / 8291 / 8292), playing the browser's part too.

It issues subscriptions as a browser's `pushManager.subscribe()` would: a fresh P-256 key
pair and 16-byte auth secret per subscription, bound to the applicationServerKey (the
app's VAPID public key) it was asked for. A push must carry a VAPID token signed by THAT
key (403 otherwise, RFC 8292 §4.2), with `aud` the endpoint's origin and `exp` at most
24 h away (401 otherwise); RFC 8030's TTL (required), Urgency and Topic headers are
checked, an aes128gcm body over 4096 bytes is 413, and every body is DECRYPTED with the
subscription's private key (a body that does not decrypt is 400): the plaintext is kept,
so tests prove what the service worker would read. A real push service cannot read the
payload; this one can because it is the browser as well.

Outcomes can be scripted like the other simulators (per endpoint, by endpoint prefix,
outages, error rates, quotas with Retry-After: simulators/core.py), a subscription can be
unsubscribed (410 Gone from then on; an endpoint never issued is 404), and
`/control/refuse` refuses connections like the other simulators (each TLS connection reset
as it is accepted; plain HTTP keeps answering, so the control routes stay reachable). One
port serves TLS with HTTP/2 (as browser vendors' push services do) or HTTP/1.1 by ALPN, and
plain HTTP/1.1 (control).
Counts are per endpoint (`/control/stats`), captures with the plaintext per endpoint
(`/control/requests?token=<endpoint>`).
"""

from __future__ import annotations

import asyncio
import base64
import json
import os
import re
import secrets
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import http_ece
import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.core import REDACTED, ControlError, SimState, control_routes
from simulators.fcm import FcmServer, run_server
from simulators.h2server import H2ServerProtocol, H2Stream

#: Scriptable outcomes and their statuses (RFC 8030 §5 and what push services answer).
WEBPUSH_REASONS: dict[str, int] = {
    "BadRequest": 400,
    "Unauthorized": 401,
    "Forbidden": 403,
    "NotFound": 404,
    "Gone": 410,
    "PayloadTooLarge": 413,
    "TooManyRequests": 429,
    "InternalServerError": 500,
    "ServiceUnavailable": 503,
}
MAX_BODY = 4096
VAPID_MAX_S = 24 * 3600
URGENCIES = frozenset({"very-low", "low", "normal", "high"})
_TOPIC = re.compile(r"^[A-Za-z0-9_\-]{1,32}$")
_PUSH_PATH = re.compile(r"^/wpush/([A-Za-z0-9_\-]+)$")
_VAPID = re.compile(r"^vapid\s+(.*)$", re.IGNORECASE)
_SUBJECT = re.compile(r"^(mailto:[^@\s]+@[^@\s]+|https://\S+)$", re.IGNORECASE)


# The simulator stands apart from Pushline (it imports nothing of it): its own base64url.
def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def b64url_decode(value: str) -> bytes:
    if not re.fullmatch(r"[A-Za-z0-9_\-]*={0,2}", value):
        raise ValueError("not base64url")
    stripped = value.rstrip("=")
    return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))


def public_key_b64(key: ec.EllipticCurvePrivateKey) -> str:
    raw = key.public_key().public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(raw)


@dataclass(frozen=True)
class Subscription:
    id: str
    private_key: ec.EllipticCurvePrivateKey
    auth: bytes
    app_server_key: str  # base64url of the VAPID public key it is bound to

    def keys(self) -> dict[str, str]:
        return {"p256dh": public_key_b64(self.private_key), "auth": b64url(self.auth)}


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict[str, Any] = field(default_factory=dict)
    headers: dict[str, str] = field(default_factory=dict)

    def encoded(self) -> bytes:
        return json.dumps(self.body, separators=(",", ":")).encode() if self.body else b""


class WebPushState(SimState):
    def reset(self) -> None:
        super().reset()
        self.h2_connections = 0
        self.h2_requests = 0
        self.decrypted_total = 0
        self.vapid_checked = 0

    def stats(self) -> dict[str, Any]:
        return {
            **super().stats(),
            "h2_connections": self.h2_connections,
            "h2_requests": self.h2_requests,
            "decrypted_total": self.decrypted_total,
            "vapid_checked": self.vapid_checked,
        }


def _error(status: int, reason: str, message: str, retry_after: int | None = None) -> Answer:
    # Mozilla autopush's error shape: code, errno-less here, error and message.
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    return Answer(status, {"code": status, "error": reason, "message": message}, headers)


class WebPushSimulator:
    """Subscriptions, VAPID checks, decryption and outcome state of the fake push service."""

    def __init__(self) -> None:
        self.state = WebPushState(
            WEBPUSH_REASONS,
            quota_reason="TooManyRequests",
            device_rate_reason="TooManyRequests",
            default_error_reason="InternalServerError",
        )
        self.subscriptions: dict[str, Subscription] = {}
        self.gone: set[str] = set()
        self._tokens: dict[tuple[str, str], float] = {}  # (jwt, audience) -> exp, verified

    # -- the browser's side -----------------------------------------------------------------

    def subscribe(self, app_server_key: Any) -> Subscription:
        if not isinstance(app_server_key, str):
            raise ControlError("application_server_key required (base64url VAPID public key)")
        try:
            raw = b64url_decode(app_server_key)
            ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
        except ValueError:
            raise ControlError("application_server_key is not a P-256 public key") from None
        sub = Subscription(
            id=secrets.token_urlsafe(24),
            private_key=ec.generate_private_key(ec.SECP256R1()),
            auth=os.urandom(16),
            app_server_key=b64url(raw),
        )
        self.subscriptions[sub.id] = sub
        return sub

    def unsubscribe(self, sub_id: str) -> None:
        if self.subscriptions.pop(sub_id, None) is None:
            raise ControlError(f"no subscription {sub_id}")
        self.gone.add(sub_id)

    # -- the push service's side ---------------------------------------------------------

    def push(self, sub_id: str, endpoint: str, headers: dict[str, str], body: bytes) -> Answer:
        """One push message (RFC 8030 §5). `headers` are lower-case, as sent."""
        state = self.state
        sub = self.subscriptions.get(sub_id)
        if sub is None:
            gone = sub_id in self.gone
            state.record(endpoint, "Gone" if gone else "NotFound")
            if gone:
                return _error(410, "Gone", "The subscription was unsubscribed.")
            return _error(404, "NotFound", "No such subscription.")
        refused = self._check_vapid(sub, endpoint, headers.get("authorization", ""))
        if refused is None:
            refused = _check_headers(headers, body)
        try:
            plaintext = http_ece.decrypt(
                body, private_key=sub.private_key, auth_secret=sub.auth, version="aes128gcm"
            )
        except Exception:  # noqa: BLE001 - http_ece raises anything from a bad body
            plaintext = None
            refused = refused or _error(400, "BadRequest", "The payload does not decrypt.")
        else:
            state.decrypted_total += 1
        captured = _plaintext_json(plaintext)

        def capture() -> dict[str, str]:
            return {k: (REDACTED if k == "authorization" else v) for k, v in headers.items()}

        if refused is not None:
            state.record(endpoint, str(refused.body.get("error")), capture, captured)
            return refused
        decision = state.decide(endpoint, sub.app_server_key)
        if decision is not None:
            status = WEBPUSH_REASONS[decision.reason]
            retry = decision.retry_after if status in (429, 503) else None
            state.record(endpoint, decision.reason, capture, captured)
            return _error(status, decision.reason, f"Scripted: {decision.reason}", retry)
        state.record(endpoint, "accepted", capture, captured)
        return Answer(201, headers={"location": f"{_origin_of(endpoint)}/m/{uuid.uuid4().hex}"})

    def _check_vapid(self, sub: Subscription, endpoint: str, authorization: str) -> Answer | None:
        """RFC 8292: `vapid t=<JWT>, k=<public key>`; k must be the subscription's key."""
        match = _VAPID.match(authorization.strip())
        params: dict[str, str] = {}
        if match:
            for part in match.group(1).split(","):
                name, _, value = part.strip().partition("=")
                params[name.strip().lower()] = value.strip()
        token, key = params.get("t"), params.get("k")
        if not token or not key:
            return _error(401, "Unauthorized", "Missing VAPID authorization (vapid t=..., k=...).")
        if key.rstrip("=") != sub.app_server_key:
            return _error(
                403,
                "Forbidden",
                "VAPID key does not match the subscription's applicationServerKey.",
            )
        audience = _origin_of(endpoint)
        now = time.time()
        exp = self._tokens.get((token, audience))
        if exp is None:
            problem = _verify_jwt(token, key, audience, now)
            if problem is not None:
                return _error(401, "Unauthorized", problem)
            self.state.vapid_checked += 1
            exp = float(jwt.decode(token, options={"verify_signature": False})["exp"])
            if len(self._tokens) > 10_000:
                self._tokens.clear()
            self._tokens[(token, audience)] = exp
        if exp < now:
            return _error(401, "Unauthorized", "VAPID token expired.")
        return None

    # -- HTTP/1.1 (Starlette) ----------------------------------------------------------------

    async def push_endpoint(self, request: Request) -> Response:
        sub_id = request.path_params["sub"]
        endpoint = f"https://{request.url.netloc}/wpush/{sub_id}"
        headers = {k.lower(): v for k, v in request.headers.items()}
        answer = self.push(sub_id, endpoint, headers, await request.body())
        return Response(
            answer.encoded(),
            status_code=answer.status,
            headers=answer.headers,
            media_type="application/json" if answer.body else None,
        )


def _verify_jwt(token: str, key: str, audience: str, now: float) -> str | None:
    """What is wrong with a VAPID JWT, or None."""
    try:
        public = ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), b64url_decode(key))
        claims = jwt.decode(
            token,
            public,
            algorithms=["ES256"],
            audience=audience,
            options={"require": ["exp", "aud"]},
        )
    except jwt.InvalidAudienceError:
        return f"VAPID aud must be the endpoint's origin {audience}."
    except jwt.ExpiredSignatureError:
        return "VAPID token expired."
    except (jwt.PyJWTError, ValueError) as exc:
        return f"Invalid VAPID token: {exc}."
    if float(claims["exp"]) - now > VAPID_MAX_S + 60:
        return "VAPID exp must be at most 24 hours ahead."
    sub = claims.get("sub")
    if isinstance(sub, str) and not _SUBJECT.match(sub):
        return "VAPID sub must be a mailto: or https: contact."
    return None


def _check_headers(headers: dict[str, str], body: bytes) -> Answer | None:
    """RFC 8030's request headers and the size limit."""
    ttl = headers.get("ttl")
    if ttl is None or not ttl.isdigit():
        return _error(400, "BadRequest", "TTL header required: a number of seconds.")
    urgency = headers.get("urgency")
    if urgency is not None and urgency not in URGENCIES:
        return _error(400, "BadRequest", f"Urgency must be one of {sorted(URGENCIES)}.")
    topic = headers.get("topic")
    if topic is not None and not _TOPIC.match(topic):
        return _error(400, "BadRequest", "Topic is at most 32 base64url characters.")
    if headers.get("content-encoding", "").lower() != "aes128gcm":
        return _error(400, "BadRequest", "Content-Encoding must be aes128gcm (RFC 8291).")
    if len(body) > MAX_BODY:
        return _error(413, "PayloadTooLarge", f"Body of {len(body)} bytes exceeds {MAX_BODY}.")
    return None


def _plaintext_json(plaintext: bytes | None) -> Any:
    if plaintext is None:
        return None
    try:
        return json.loads(plaintext)
    except ValueError:
        return plaintext.decode("utf-8", "replace")


def _origin_of(endpoint: str) -> str:
    scheme, _, rest = endpoint.partition("://")
    return f"{scheme}://{rest.split('/', 1)[0]}"


def create_app(sim: WebPushSimulator) -> Starlette:
    """Push (`POST /wpush/{sub}`) and the control routes (`/control/*`)."""

    async def subscribe(request: Request) -> Response:
        try:
            data = json.loads(await request.body() or b"{}")
            sub = sim.subscribe(data.get("application_server_key"))
        except (ControlError, ValueError, AttributeError) as exc:
            return JSONResponse({"error": str(exc)}, status_code=400)
        endpoint = f"https://{request.url.netloc}/wpush/{sub.id}"
        return JSONResponse({"endpoint": endpoint, "expirationTime": None, "keys": sub.keys()})

    def unsubscribe(data: dict[str, Any]) -> None:
        match = _PUSH_PATH.match("/" + str(data.get("endpoint", "")).split("/", 3)[-1])
        if match is None:
            raise ControlError("endpoint required: one this simulator issued")
        sim.unsubscribe(match.group(1))

    routes = [
        Route("/wpush/{sub}", sim.push_endpoint, methods=["POST"]),
        Route("/control/subscriptions", subscribe, methods=["POST"]),
        *control_routes(sim.state, {"/control/unsubscribe": unsubscribe}),
    ]
    app = Starlette(routes=routes)
    app.state.sim = sim
    return app


class WebPushH2Protocol(H2ServerProtocol):
    """Push messages over HTTP/2 (what httpx speaks to a TLS push service)."""

    def __init__(self, sim: WebPushSimulator) -> None:
        super().__init__()
        self.sim = sim

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sim.state.h2_connections += 1
        super().connection_made(transport)

    def handle(self, stream_id: int, stream: H2Stream) -> None:
        path = stream.path.decode("latin-1")
        match = _PUSH_PATH.match(path)
        if stream.method != b"POST" or match is None:
            self._respond(stream_id, _error(404, "NotFound", "Not found."), False)
            return
        self.sim.state.h2_requests += 1
        headers = {
            k.decode("latin-1"): v.decode("utf-8", "replace") for k, v in stream.headers.items()
        }
        endpoint = f"https://{stream.authority.decode('latin-1')}{path}"
        answer = self.sim.push(match.group(1), endpoint, headers, bytes(stream.body))
        delay = self.sim.state.config.latency_ms
        if delay:
            asyncio.get_running_loop().call_later(
                delay / 1000, self._respond, stream_id, answer, True
            )
            return
        self._respond(stream_id, answer, False)

    def _respond(self, stream_id: int, answer: Answer, flush: bool) -> None:
        self.respond(stream_id, answer.status, answer.encoded(), answer.headers, flush)


def build_server(tls_dir: Path, log_level: str = "warning") -> tuple[WebPushSimulator, FcmServer]:
    """The simulator on the FCM simulator's two-protocol port machinery."""
    sim = WebPushSimulator()
    server = FcmServer(
        sim,  # type: ignore[arg-type]  # FcmServer reads it only for its own defaults
        tls_dir,
        log_level,
        app=create_app(sim),
        h2=lambda: WebPushH2Protocol(sim),
    )
    return sim, server


async def serve(
    host: str,
    port: int,
    log_level: str = "warning",
    ready: Callable[[int], None] | None = None,
    tls_dir: Path | None = None,
) -> None:
    """Run the Web Push simulator until cancelled. TLS material as for the FCM simulator."""
    await run_server(lambda tls: build_server(tls, log_level)[1], host, port, ready, tls_dir)
