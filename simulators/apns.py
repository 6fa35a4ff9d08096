"""A fake APNs: HTTP/2 over TLS on `h2` + asyncio, answering like Apple does.

aioapns matches a 200 by the `apns-id` response header and an error by stream id, reading
the reason from ONE DATA frame of JSON; this server therefore always echoes apns-id and
sends error bodies in a single frame. Per-request work is kept small (no logging, cached
JWT verification, lazy capture) because benchmarks measure against this server's ceiling.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import socket
import ssl
import time
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.ec import EllipticCurvePublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from h2.errors import ErrorCodes
from h2.exceptions import H2Error

from simulators.certs import TLSFiles, client_cert_topic, ensure_tls
from simulators.core import (
    ControlError,
    SimState,
    load_public_key_pem,
    parse_body_json,
    reset_connection,
)
from simulators.h2server import H2ServerProtocol, H2Stream, capture_headers

log = logging.getLogger("simulators.apns")

#: Apple's reasons and their HTTP statuses ("Handling notification responses from APNs").
#: TopicDisallowed is listed there as 400, so it is 400 here whether the topic is refused
#: for a certificate or for a key restricted to some topics.
APNS_REASONS: dict[str, int] = {
    "BadCollapseId": 400,
    "BadDeviceToken": 400,
    "BadExpirationDate": 400,
    "BadMessageId": 400,
    "BadPriority": 400,
    "BadTopic": 400,
    "DeviceTokenNotForTopic": 400,
    "DuplicateHeaders": 400,
    "IdleTimeout": 400,
    "InvalidPushType": 400,
    "MissingDeviceToken": 400,
    "MissingTopic": 400,
    "PayloadEmpty": 400,
    "TopicDisallowed": 400,
    "BadCertificate": 403,
    "BadCertificateEnvironment": 403,
    "ExpiredProviderToken": 403,
    "Forbidden": 403,
    "InvalidProviderToken": 403,
    "MissingProviderToken": 403,
    "UnrelatedKeyIdInToken": 403,
    "BadEnvironmentKeyInToken": 403,
    "BadPath": 404,
    "MethodNotAllowed": 405,
    "ExpiredToken": 410,
    "Unregistered": 410,
    "PayloadTooLarge": 413,
    "TooManyProviderTokenUpdates": 429,
    "TooManyRequests": 429,
    "InternalServerError": 500,
    "ServiceUnavailable": 503,
    "Shutdown": 503,
}
#: Reasons whose body carries the time APNs learned the token was no longer valid.
TIMESTAMPED = frozenset({"Unregistered", "ExpiredToken"})

PUSH_TYPES = frozenset(
    {
        b"alert",
        b"background",
        b"location",
        b"voip",
        b"complication",
        b"fileprovider",
        b"mdm",
        b"liveactivity",
        b"pushtotalk",
    }
)
PRIORITIES = frozenset({b"10", b"5", b"1"})
MAX_PAYLOAD = 4096
MAX_PAYLOAD_VOIP = 5120
TOKEN_TTL_S = 3600
_HEX = frozenset(b"0123456789abcdefABCDEF")
_PATH_PREFIX = b"/3/device/"
_JWT_CACHE_MAX = 10_000


@dataclass(frozen=True)
class SigningKey:
    """A registered provider-token key (Apple's .p8), public half only."""

    key_id: str
    team_id: str
    public_key: EllipticCurvePublicKey
    topics: tuple[str, ...] | None


@dataclass(frozen=True)
class _JwtInfo:
    reason: str | None  # InvalidProviderToken, or None when the signature checks out
    iat: int = 0
    key: SigningKey | None = None


def topic_covered(topic: str, base: str) -> bool:
    """`topic` is `base` or one of its suffixed variants (`.voip`, `.complication`...)."""
    return topic == base or topic.startswith(base + ".")


def _is_uuid(value: bytes) -> bool:
    # Apple wants the canonical 8-4-4-4-12 form; uuid.UUID alone also accepts braces/urns.
    if len(value) != 36:
        return False
    try:
        uuid.UUID(value.decode("ascii"))
    except ValueError:
        return False
    return True


class APNsSimulator:
    """Validation rules, registered keys and outcome state; transport-free."""

    def __init__(self) -> None:
        self.state = SimState(
            APNS_REASONS,
            quota_reason="TooManyRequests",
            device_rate_reason="TooManyRequests",
            default_error_reason="InternalServerError",
        )
        self.keys: dict[str, SigningKey] = {}
        self._jwt_cache: dict[str, _JwtInfo] = {}

    # -- registration ------------------------------------------------------------------

    def register_key(self, data: dict[str, Any]) -> None:
        key_id, team_id = data.get("key_id"), data.get("team_id")
        if not isinstance(key_id, str) or not isinstance(team_id, str) or not key_id:
            raise ControlError("key_id and team_id (strings) required")
        topics = data.get("topics")
        if topics is not None and not (
            isinstance(topics, list) and all(isinstance(t, str) for t in topics)
        ):
            raise ControlError("topics must be a list of strings")
        public = load_pem_public_key(load_public_key_pem(data))
        if not isinstance(public, EllipticCurvePublicKey):
            raise ControlError("APNs signing keys are EC P-256 (ES256)")
        self.keys[key_id] = SigningKey(key_id, team_id, public, tuple(topics) if topics else None)
        self._jwt_cache.clear()  # a token rejected earlier may be valid with the new key

    # -- provider token ----------------------------------------------------------------

    def _jwt(self, token: str) -> _JwtInfo:
        info = self._jwt_cache.get(token)
        if info is None:
            info = self._verify_jwt(token)
            if len(self._jwt_cache) >= _JWT_CACHE_MAX:
                self._jwt_cache.clear()
            self._jwt_cache[token] = info
        return info

    def _verify_jwt(self, token: str) -> _JwtInfo:
        bad = _JwtInfo("InvalidProviderToken")
        try:
            header = jwt.get_unverified_header(token)
            key = self.keys.get(str(header.get("kid")))
            if key is None or header.get("alg") != "ES256":
                return bad
            claims = jwt.decode(
                token,
                key.public_key,
                algorithms=["ES256"],
                # Apple checks only iss and iat (age is checked per request, not here).
                options={
                    "verify_exp": False,
                    "verify_iat": False,
                    "verify_nbf": False,
                    "verify_aud": False,
                    "require": ["iss", "iat"],
                },
            )
        except jwt.PyJWTError:
            return bad
        iat = claims.get("iat")
        if claims.get("iss") != key.team_id or not isinstance(iat, int):
            return bad
        return _JwtInfo(None, iat, key)

    # -- the request -------------------------------------------------------------------

    def check(
        self,
        method: bytes,
        path: bytes,
        headers: dict[bytes, bytes],
        duplicated: bool,
        body: bytes,
        cert_topic: str | None,
        now: float,
    ) -> tuple[str, str | None, int | None]:
        """Validate one request in Apple's order; returns (token, reason-or-None, retry)."""
        if method != b"POST":
            return "", "MethodNotAllowed", None
        if not path.startswith(_PATH_PREFIX):
            return "", "BadPath", None
        raw_token = path[len(_PATH_PREFIX) :]
        token = raw_token.decode("ascii", "replace")
        if b"/" in raw_token:
            return token, "BadPath", None

        # Authentication: a client certificate wins; otherwise a provider token is required.
        topic_b = headers.get(b"apns-topic")
        topic = topic_b.decode("utf-8", "replace") if topic_b is not None else None
        allowed: tuple[str, ...] | None
        if cert_topic is not None:
            # A single-topic certificate lets the request omit apns-topic, as Apple does.
            if topic is None:
                topic = cert_topic
            allowed = (cert_topic,)
        else:
            auth = headers.get(b"authorization")
            if auth is None:
                return token, "MissingProviderToken", None
            scheme, _, provider_token = auth.decode("ascii", "replace").partition(" ")
            if scheme.lower() != "bearer" or not provider_token:
                return token, "MissingProviderToken", None
            info = self._jwt(provider_token.strip())
            if info.reason is not None:
                return token, info.reason, None
            if now - info.iat > TOKEN_TTL_S:
                return token, "ExpiredProviderToken", None
            assert info.key is not None
            allowed = info.key.topics

        if topic is None:
            return token, "MissingTopic", None
        if allowed is not None and not any(topic_covered(topic, t) for t in allowed):
            return token, "TopicDisallowed", None

        if duplicated:
            return token, "DuplicateHeaders", None
        push_type = headers.get(b"apns-push-type")
        if push_type is not None and push_type not in PUSH_TYPES:
            return token, "InvalidPushType", None
        priority = headers.get(b"apns-priority")
        if priority is not None and priority not in PRIORITIES:
            return token, "BadPriority", None
        expiration = headers.get(b"apns-expiration")
        if expiration is not None and not expiration.isdigit():
            return token, "BadExpirationDate", None
        collapse = headers.get(b"apns-collapse-id")
        if collapse is not None and len(collapse) > 64:
            return token, "BadCollapseId", None
        apns_id = headers.get(b"apns-id")
        if apns_id is not None and not _is_uuid(apns_id):
            return token, "BadMessageId", None

        if not raw_token:
            return token, "MissingDeviceToken", None
        n = len(raw_token)
        if n < 64 or n > 200 or n % 2 or not _HEX.issuperset(raw_token):
            return token, "BadDeviceToken", None

        if not body:
            return token, "PayloadEmpty", None
        voip = push_type == b"voip" or topic.endswith(".voip")
        if len(body) > (MAX_PAYLOAD_VOIP if voip else MAX_PAYLOAD):
            return token, "PayloadTooLarge", None
        # Apple documents no reason for a payload that is not a JSON object; PayloadEmpty is
        # the closest documented one and maps to "invalid data" like the other 400s.
        if body[:1] != b"{":
            return token, "PayloadEmpty", None
        try:
            if not isinstance(json.loads(body), dict):
                return token, "PayloadEmpty", None
        except ValueError:
            return token, "PayloadEmpty", None

        decision = self.state.decide(token, topic)
        if decision is None:
            return token, None, None
        return token, decision.reason, decision.retry_after


class APNsServerProtocol(H2ServerProtocol):
    """One HTTP/2 connection; many concurrent streams, answered as they complete."""

    max_concurrent_streams = 1000
    # aioapns parses each DATA frame as a whole JSON document.
    whole_body_frames = True

    def __init__(self, sim: APNsSimulator) -> None:
        super().__init__()
        self.sim = sim
        self.cert_topic: str | None = None
        self.cert_error: str | None = None

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_obj = transport.get_extra_info("ssl_object")
        der = ssl_obj.getpeercert(binary_form=True) if ssl_obj is not None else None
        if der:
            self.cert_topic = client_cert_topic(der)
            if self.cert_topic is None:
                self.cert_error = "BadCertificate"
        super().connection_made(transport)

    def handle(self, stream_id: int, stream: H2Stream) -> None:
        sim = self.sim
        state = sim.state
        apns_id = stream.headers.get(b"apns-id") or str(uuid.uuid4()).encode()
        reason: str | None
        retry: int | None
        if self.cert_error is not None:
            token, reason, retry = "", self.cert_error, None
        else:
            token, reason, retry = sim.check(
                stream.method,
                stream.path,
                stream.headers,
                stream.duplicated,
                bytes(stream.body),
                self.cert_topic,
                time.time(),
            )
        outcome = reason or "accepted"
        if state.config.capture_requests:
            state.record(token, outcome, capture_headers(stream.headers), _body(stream.body))
        else:
            state.record(token, outcome)
        delay = state.config.latency_ms
        if delay:
            # Latency per stream via the event loop, so other streams keep flowing.
            asyncio.get_running_loop().call_later(
                delay / 1000, self._respond, stream_id, apns_id, reason, retry, True
            )
        else:
            # data_received flushes once for the whole batch of answers.
            self._respond(stream_id, apns_id, reason, retry, False)

    def _respond(
        self,
        stream_id: int,
        apns_id: bytes,
        reason: str | None,
        retry: int | None,
        flush: bool,
    ) -> None:
        if self.closed:
            return
        try:
            if reason is None:
                self.conn.send_headers(
                    stream_id, [(b":status", b"200"), (b"apns-id", apns_id)], end_stream=True
                )
            else:
                status = APNS_REASONS[reason]
                headers = [
                    (b":status", str(status).encode()),
                    (b"apns-id", apns_id),
                    (b"content-type", b"application/json"),
                ]
                if retry is not None and status in (429, 503):
                    headers.append((b"retry-after", str(retry).encode()))
                payload: dict[str, Any] = {"reason": reason}
                if reason in TIMESTAMPED:
                    payload["timestamp"] = int(time.time() * 1000)
                body = json.dumps(payload, separators=(",", ":")).encode()
                self.conn.send_headers(stream_id, headers)
                self._send_body(stream_id, body)
        except H2Error:
            return  # stream reset or connection gone meanwhile: nothing to answer
        if flush:
            self._flush()

    def shutdown(self) -> None:
        """Send GOAWAY and close, as APNs does when it goes away."""
        if self.closed:
            return
        with contextlib.suppress(H2Error):
            self.conn.close_connection(ErrorCodes.NO_ERROR)
        self._flush()
        self._close()


def _body(raw: bytearray) -> Any:
    return parse_body_json(bytes(raw)) if raw else None


def server_ssl_context(files: TLSFiles) -> ssl.SSLContext:
    """TLS for the fake APNs: offers h2 via ALPN and accepts (not requires) client certs."""
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(files.server_cert), str(files.server_key))
    ctx.set_alpn_protocols(["h2"])
    ctx.load_verify_locations(cafile=str(files.ca_cert))
    ctx.verify_mode = ssl.CERT_OPTIONAL  # certificate auth when presented, JWT otherwise
    return ctx


def client_ssl_context(ca_cert: Path | str) -> ssl.SSLContext:
    """A client context trusting the simulator CA with ALPN h2 (for aioapns' ssl_context)."""
    ctx = ssl.create_default_context(cafile=str(ca_cert))
    ctx.set_alpn_protocols(["h2"])
    return ctx


class APNsServer:
    """The TLS listener plus the set of live connections.

    Connections are accepted by hand, so that one can be refused (reset before TLS) while
    the simulator's control API says so (`SimState.refuse`)."""

    def __init__(self, sim: APNsSimulator, files: TLSFiles) -> None:
        self.sim = sim
        self.files = files
        self.connections: set[APNsServerProtocol] = set()
        self.listener: socket.socket | None = None
        self._accepting: asyncio.Task[None] | None = None
        self._handshakes: set[asyncio.Task[None]] = set()
        sim.state.droppers.append(self.drop_connections)

    def _factory(self) -> APNsServerProtocol:
        proto = _TrackedProtocol(self.sim, self.connections)
        return proto

    async def start(self, host: str, port: int) -> int:
        self.listener = socket.create_server((host, port), backlog=1024)
        self.listener.setblocking(False)
        self._accepting = asyncio.create_task(self._accept(self.listener))
        return int(self.listener.getsockname()[1])

    async def _accept(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        ctx = server_ssl_context(self.files)
        while True:
            conn, _ = await loop.sock_accept(listener)
            if self.sim.state.refuse_connection():
                reset_connection(conn)
                continue
            task = asyncio.create_task(self._handshake(loop, conn, ctx))
            self._handshakes.add(task)
            task.add_done_callback(self._handshakes.discard)

    async def _handshake(
        self, loop: asyncio.AbstractEventLoop, conn: socket.socket, ctx: ssl.SSLContext
    ) -> None:
        try:
            await loop.connect_accepted_socket(
                self._factory, conn, ssl=ctx, ssl_handshake_timeout=10
            )
        except (OSError, TimeoutError, ssl.SSLError):
            conn.close()

    def drop_connections(self) -> None:
        """Cut every live connection at once, as a provider that became unreachable."""
        for conn in list(self.connections):
            if conn.transport is not None:
                conn.transport.abort()

    async def close(self) -> None:
        for conn in list(self.connections):
            conn.shutdown()
        if self._accepting is not None:
            self._accepting.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._accepting
        if self.listener is not None:
            self.listener.close()


class _TrackedProtocol(APNsServerProtocol):
    def __init__(self, sim: APNsSimulator, registry: set[APNsServerProtocol]) -> None:
        super().__init__(sim)
        self._registry = registry

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self._registry.add(self)
        super().connection_made(transport)

    def connection_lost(self, exc: Exception | None) -> None:
        self._registry.discard(self)
        super().connection_lost(exc)


def control_app(sim: APNsSimulator) -> Any:
    """The plain-HTTP control API for the APNs simulator."""
    from starlette.applications import Starlette

    from simulators.core import control_routes

    routes = control_routes(sim.state, {"/control/keys": sim.register_key})
    return Starlette(routes=routes)


async def serve(
    host: str,
    port: int,
    control_port: int,
    tls_dir: Path,
    log_level: str = "warning",
    ready: Callable[[int, int], None] | None = None,
) -> None:
    """Run the APNs simulator and its control API on the current loop until cancelled."""
    import uvicorn

    from simulators import fasthpack

    fasthpack.install()  # this process only serves; the faster decoder is safe here
    files = ensure_tls(tls_dir)
    sim = APNsSimulator()
    server = APNsServer(sim, files)
    bound = await server.start(host, port)
    config = uvicorn.Config(
        control_app(sim),
        host=host,
        port=control_port,
        log_level=log_level,
        access_log=False,
        lifespan="off",
    )
    control = uvicorn.Server(config)
    task = asyncio.create_task(control.serve())
    while not control.started:
        if task.done():
            task.result()  # surface the bind error
            raise RuntimeError("control server stopped before starting")
        await asyncio.sleep(0.01)
    control_bound = int(control.servers[0].sockets[0].getsockname()[1])
    if ready is not None:
        ready(bound, control_bound)
    try:
        await task
    finally:
        await server.close()
