"""A fake FCM HTTP v1 API with Google's OAuth2 token endpoint.

firebase-admin only turns an answer into a typed exception (UnregisteredError, ...) when
the error body has Google's shape with an FcmError detail, so every error here is built
by `google_error_answer`. Control routes live on the same port under /control.

One port speaks both ways, told apart by the first byte a client sends: plain HTTP/1.1
(the Starlette app: control, token and send routes, as before) and TLS, where ALPN picks
HTTP/2 (the token and send routes on `h2`, as fcm.googleapis.com serves them; one
connection carries every request in flight) or HTTP/1.1 (the Starlette app again, e.g.
google-auth's token request through `requests`). The TLS certificate comes from
`simulators.certs` (see `serve` for where it lives).
"""

from __future__ import annotations

import asyncio
import json
import os
import re
import secrets
import socket
import ssl
import time
import urllib.parse
import uuid
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.certs import ensure_tls
from simulators.core import (
    REDACTED,
    ControlError,
    OAuthH2State,
    control_routes,
    load_public_key_pem,
    reset_connection,
)
from simulators.h2server import H2ServerProtocol, H2Stream, JsonAnswer, capture_headers

#: FCM error codes -> (HTTP status, Google status, message) as FCM answers them.
FCM_ERRORS: dict[str, tuple[int, str, str]] = {
    "UNREGISTERED": (404, "NOT_FOUND", "Requested entity was not found."),
    "SENDER_ID_MISMATCH": (403, "PERMISSION_DENIED", "SenderId mismatch"),
    "QUOTA_EXCEEDED": (429, "RESOURCE_EXHAUSTED", "Quota exceeded."),
    "UNAVAILABLE": (503, "UNAVAILABLE", "The service is currently unavailable."),
    "INTERNAL": (500, "INTERNAL", "Internal error encountered."),
    "THIRD_PARTY_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS or Web Push Service"),
    "APNS_AUTH_ERROR": (401, "UNAUTHENTICATED", "Auth error from APNS"),
    "INVALID_ARGUMENT": (400, "INVALID_ARGUMENT", "Request contains an invalid argument."),
}
FCM_REASONS: dict[str, int] = {code: status for code, (status, _, _) in FCM_ERRORS.items()}

FCM_ERROR_TYPE = "type.googleapis.com/google.firebase.fcm.v1.FcmError"
BAD_REQUEST_TYPE = "type.googleapis.com/google.rpc.BadRequest"
#: google-auth always signs this audience, whatever token_uri the credentials name.
GOOGLE_TOKEN_AUDIENCES = frozenset(
    {"https://oauth2.googleapis.com/token", "https://www.googleapis.com/oauth2/v4/token"}
)
JWT_BEARER = "urn:ietf:params:oauth:grant-type:jwt-bearer"
ACCESS_TOKEN_TTL_S = 3600
MAX_MESSAGE_BYTES = 4096
MAX_TTL_S = 2_419_200
_TOKEN_RE = re.compile(r"[A-Za-z0-9_:\-]+")
_TTL_RE = re.compile(r"(\d+)(\.\d{1,9})?s")
_TOKEN_INVALID = "The registration token is not a valid FCM registration token"
_SEND_PATH = re.compile(rb"/v1/projects/([^/]+)/messages:send")
#: Where the TLS certificate lives unless `serve` is told; the stack points it at its own.
TLS_DIR_ENV = "PUSHLINE_SIMULATOR_TLS_DIR"
DEFAULT_TLS_DIR = Path(".simulators/tls")
#: What Google's front end announces; httpx never runs more streams than this on one
#: connection anyway.
MAX_CONCURRENT_STREAMS = 100
_TLS_HANDSHAKE = 0x16  # the first byte of every TLS record that opens a connection


@dataclass(frozen=True)
class ServiceAccount:
    client_email: str
    private_key_id: str
    public_key: RSAPublicKey
    project_id: str


@dataclass(frozen=True)
class AccessToken:
    project_id: str
    expires_at: float


class InvalidMessage(Exception):
    """A message FCM rejects with 400 INVALID_ARGUMENT."""

    def __init__(self, message: str, field: str | None = None) -> None:
        super().__init__(message)
        self.message = message
        self.field = field


FcmAnswer = JsonAnswer  # one HTTP answer, for the HTTP/1.1 app and the HTTP/2 server


def google_error_answer(
    status: int,
    google_status: str,
    message: str,
    fcm_code: str | None = None,
    field: str | None = None,
    retry_after: int | None = None,
) -> FcmAnswer:
    """An error in the shape Google APIs use, which firebase-admin parses."""
    details: list[dict[str, Any]] = []
    if fcm_code is not None:
        details.append({"@type": FCM_ERROR_TYPE, "errorCode": fcm_code})
    if field is not None:
        details.append(
            {
                "@type": BAD_REQUEST_TYPE,
                "fieldViolations": [{"field": field, "description": message}],
            }
        )
    error: dict[str, Any] = {"code": status, "message": message, "status": google_status}
    if details:
        error["details"] = details
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    return FcmAnswer(status, {"error": error}, headers)


def _json_response(answer: FcmAnswer) -> JSONResponse:
    headers = {"Retry-After": answer.headers["retry-after"]} if answer.headers else None
    return JSONResponse(answer.body, status_code=answer.status, headers=headers)


def validate_message(message: Any) -> str:
    """Check what FCM checks on a v1 message; returns the target key for stats."""
    if not isinstance(message, dict):
        raise InvalidMessage("Invalid JSON payload received. 'message' must be an object.")
    targets = [k for k in ("token", "fid", "topic", "condition") if k in message]
    if len(targets) != 1:
        raise InvalidMessage(
            "Exactly one of message.token, message.fid, message.topic or message.condition "
            "must be set.",
            "message",
        )
    data = message.get("data")
    if data is not None:
        if not isinstance(data, dict):
            raise InvalidMessage("Invalid value at 'message.data'", "message.data")
        for i, (key, value) in enumerate(data.items()):
            if not isinstance(value, str):
                field = f"message.data[{i}].value"
                raise InvalidMessage(
                    f"Invalid value at '{field}' (TYPE_STRING), {json.dumps(value)} (key {key!r})",
                    field,
                )
    android = message.get("android")
    if isinstance(android, dict) and "ttl" in android:
        ttl = android["ttl"]
        match = _TTL_RE.fullmatch(ttl) if isinstance(ttl, str) else None
        if match is None:
            raise InvalidMessage(
                "Invalid value at 'message.android.ttl' (type.googleapis.com/"
                f"google.protobuf.Duration), {json.dumps(ttl)}",
                "message.android.ttl",
            )
        if float(ttl[:-1]) > MAX_TTL_S:
            raise InvalidMessage(
                f"TTL must be between 0 and {MAX_TTL_S} seconds", "message.android.ttl"
            )
    size = len(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_MESSAGE_BYTES:
        raise InvalidMessage("Message is too big", "message")
    target = targets[0]
    value = message[target]
    if target in ("token", "fid"):
        # Device addresses are counted under their bare value, like APNs device tokens.
        if not isinstance(value, str) or len(value) < 20 or not _TOKEN_RE.fullmatch(value):
            raise InvalidMessage(_TOKEN_INVALID, f"message.{target}")
        return value
    if not isinstance(value, str) or not value:
        raise InvalidMessage(f"Invalid value at 'message.{target}'", f"message.{target}")
    return f"{target}:{value}"


class FcmState(OAuthH2State):
    """The fake FCM's state and counts (tokens, HTTP/2 connections, requests)."""


class FCMSimulator:
    """Service accounts, access tokens and outcome state for the fake FCM."""

    def __init__(self) -> None:
        self.state = FcmState(
            FCM_REASONS,
            quota_reason="QUOTA_EXCEEDED",
            device_rate_reason="QUOTA_EXCEEDED",
            default_error_reason="INTERNAL",
        )
        self.accounts: dict[str, ServiceAccount] = {}
        self.access_tokens: dict[str, AccessToken] = {}

    def register_service_account(self, data: dict[str, Any]) -> None:
        try:
            email = str(data["client_email"])
            key_id = str(data["private_key_id"])
            project = str(data["project_id"])
        except KeyError as exc:
            raise ControlError(f"missing field {exc.args[0]}") from None
        public = load_pem_public_key(load_public_key_pem(data))
        if not isinstance(public, RSAPublicKey):
            raise ControlError("service account keys are RSA (RS256)")
        self.accounts[email] = ServiceAccount(email, key_id, public, project)

    def revoke_access_tokens(self, _: dict[str, Any]) -> None:
        """Forget every access token issued, as Google does when a key is revoked: clients
        get 401 UNAUTHENTICATED until they mint a new one."""
        self.access_tokens.clear()

    def grant(self, assertion: str, token_url: str, now: float) -> AccessToken | str:
        """Verify a JWT-bearer assertion; returns the access token or an error description."""
        try:
            header = jwt.get_unverified_header(assertion)
            unverified = jwt.decode(assertion, options={"verify_signature": False})
        except jwt.PyJWTError:
            return "Invalid JWT: malformed assertion."
        account = self.accounts.get(str(unverified.get("iss")))
        if account is None:
            return "Invalid grant: account not found"
        if header.get("kid") not in (None, account.private_key_id):
            return "Invalid JWT Signature."
        try:
            claims = jwt.decode(
                assertion,
                account.public_key,
                algorithms=["RS256"],
                options={"verify_aud": False, "require": ["exp", "iat", "iss", "aud"]},
                leeway=30,
            )
        except jwt.ExpiredSignatureError:
            return "Invalid JWT: Token must be a short-lived token and in a reasonable timeframe."
        except jwt.PyJWTError:
            return "Invalid JWT Signature."
        aud = claims.get("aud")
        if aud != token_url and aud not in GOOGLE_TOKEN_AUDIENCES:
            return "Invalid JWT: Failed audience check."
        token = AccessToken(account.project_id, now + ACCESS_TOKEN_TTL_S)
        if len(self.access_tokens) > 10_000:  # drop expired ones now and then
            self.access_tokens = {k: v for k, v in self.access_tokens.items() if v.expires_at > now}
        return token

    # -- the two provider endpoints, transport-free ------------------------------------

    def token_answer(self, raw: bytes, token_url: str) -> FcmAnswer:
        """Google's OAuth2 token endpoint: a JWT-bearer assertion in, an access token out."""
        form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"))
        grant_type = form.get("grant_type", [""])[0]
        assertion = form.get("assertion", [""])[0]
        if grant_type != JWT_BEARER:
            return FcmAnswer(
                400, {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"}
            )
        result = self.grant(assertion, token_url, time.time())
        if isinstance(result, str):
            return FcmAnswer(400, {"error": "invalid_grant", "error_description": result})
        access = "ya29.sim-" + secrets.token_urlsafe(32)
        self.access_tokens[access] = result
        self.state.tokens_issued += 1
        return FcmAnswer(
            200, {"access_token": access, "expires_in": ACCESS_TOKEN_TTL_S, "token_type": "Bearer"}
        )

    def send_answer(
        self,
        project: str,
        authorization: str,
        raw: bytes,
        headers: Callable[[], dict[str, str]],
    ) -> FcmAnswer:
        """messages:send. `headers` builds the request headers for capture, lazily."""
        scheme, _, value = authorization.partition(" ")
        granted = self.access_tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        state = self.state
        if granted is None or granted.expires_at < time.time():
            # Counted (under no token) so a benchmark sees auth failures in the totals.
            state.record("", "UNAUTHENTICATED")
            return google_error_answer(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
            )
        if granted.project_id != project:
            state.record("", "PERMISSION_DENIED")
            return google_error_answer(
                403,
                "PERMISSION_DENIED",
                f"Permission 'cloudmessaging.messages.create' denied on resource "
                f"'//cloudmessaging.googleapis.com/projects/{project}' (or it may not exist).",
            )
        try:
            body = json.loads(raw)
        except ValueError:
            state.record("", "INVALID_ARGUMENT")
            return google_error_answer(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        message = body.get("message") if isinstance(body, dict) else None
        try:
            target = validate_message(message)
        except InvalidMessage as exc:
            token = message.get("token") if isinstance(message, dict) else None
            state.record(str(token or ""), "INVALID_ARGUMENT", headers, body)
            return google_error_answer(
                400, "INVALID_ARGUMENT", exc.message, "INVALID_ARGUMENT", exc.field
            )
        decision = state.decide(target, project)
        if decision is not None:
            state.record(target, decision.reason, headers, body)
            status, google_status, text = FCM_ERRORS[decision.reason]
            retry = decision.retry_after if status in (429, 503) else None
            if decision.reason == "INVALID_ARGUMENT":
                text = _TOKEN_INVALID
                return google_error_answer(
                    status, google_status, text, decision.reason, "message.token", retry
                )
            return google_error_answer(status, google_status, text, decision.reason, None, retry)
        if body.get("validate_only") is True:
            state.record(target, "validated", headers, body)
            return FcmAnswer(200, {"name": f"projects/{project}/messages/fake_message_id"})
        state.record(target, "accepted", headers, body)
        return FcmAnswer(200, {"name": f"projects/{project}/messages/{uuid.uuid4().hex}"})

    # -- HTTP/1.1 (Starlette) --------------------------------------------------------------

    async def token_endpoint(self, request: Request) -> Response:
        return _json_response(self.token_answer(await request.body(), str(request.url)))

    async def send_endpoint(self, request: Request) -> Response:
        raw = await request.body()

        def headers() -> dict[str, str]:
            out = {k.lower(): v for k, v in request.headers.items()}
            out["authorization"] = REDACTED
            return out

        answer = self.send_answer(
            request.path_params["project"], request.headers.get("authorization", ""), raw, headers
        )
        return _json_response(answer)


def create_app(sim: FCMSimulator | None = None) -> Starlette:
    """The FCM simulator app: /token, /v1/projects/{project}/messages:send, /control/*."""
    sim = sim or FCMSimulator()
    routes = [
        Route("/token", sim.token_endpoint, methods=["POST"]),
        Route("/v1/projects/{project}/messages:send", sim.send_endpoint, methods=["POST"]),
        *control_routes(
            sim.state,
            {
                "/control/service-accounts": sim.register_service_account,
                "/control/access-tokens/revoke": sim.revoke_access_tokens,
            },
        ),
    ]
    app = Starlette(routes=routes)
    app.state.sim = sim
    return app


# -- HTTP/2 over TLS ------------------------------------------------------------------------


class FcmH2Protocol(H2ServerProtocol):
    """One HTTP/2 connection to the token and send endpoints; streams answered as they end."""

    max_concurrent_streams = MAX_CONCURRENT_STREAMS
    json_content_type = b"application/json; charset=UTF-8"

    def __init__(self, sim: FCMSimulator) -> None:
        super().__init__()
        self.sim = sim

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sim.state.h2_connections += 1
        super().connection_made(transport)

    def handle(self, stream_id: int, stream: H2Stream) -> None:
        sim = self.sim
        match = _SEND_PATH.fullmatch(stream.path)
        if stream.method != b"POST":
            answer = google_error_answer(405, "INVALID_ARGUMENT", "Method not allowed.")
        elif match is not None:
            sim.state.h2_requests += 1
            answer = sim.send_answer(
                match.group(1).decode("utf-8", "replace"),
                stream.headers.get(b"authorization", b"").decode("latin-1"),
                bytes(stream.body),
                capture_headers(stream.headers),
            )
            delay = sim.state.config.latency_ms
            if delay:
                # Latency per stream via the loop, so the other streams keep flowing.
                asyncio.get_running_loop().call_later(
                    delay / 1000, self.respond_json, stream_id, answer, True
                )
                return
        elif stream.path == b"/token":
            url = f"https://{stream.authority.decode('latin-1')}/token"
            answer = sim.token_answer(bytes(stream.body), url)
        else:
            answer = google_error_answer(404, "NOT_FOUND", "Not found.")
        # data_received flushes once for the whole batch of answers.
        self.respond_json(stream_id, answer, False)


def server_ssl_context(tls_dir: Path) -> ssl.SSLContext:
    """TLS for the fake FCM, offering HTTP/2 first and HTTP/1.1 for clients without it."""
    files = ensure_tls(tls_dir)
    ctx = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
    ctx.load_cert_chain(str(files.server_cert), str(files.server_key))
    ctx.set_alpn_protocols(["h2", "http/1.1"])
    return ctx


# -- one port, both protocols ---------------------------------------------------------------


class FcmServer:
    """Accepts on one port; hands each connection to HTTP/1.1 (uvicorn) or TLS by its first
    byte, and a TLS connection to HTTP/2 or HTTP/1.1 by ALPN."""

    def __init__(
        self,
        sim: FCMSimulator,
        tls_dir: Path,
        log_level: str = "warning",
        *,
        app: Starlette | None = None,
        h2: Callable[[], asyncio.Protocol] | None = None,
    ) -> None:
        """`app` and `h2` serve another provider on the same two-protocol port (the Web
        Push simulator does); by default, FCM's."""
        import uvicorn
        from uvicorn.server import ServerState

        self.sim = sim
        self.tls_dir = tls_dir
        self.h2_protocol: Callable[[], asyncio.Protocol] = h2 or (lambda: FcmH2Protocol(sim))
        self.config = uvicorn.Config(
            app or create_app(sim), log_level=log_level, access_log=False, lifespan="off"
        )
        self.config.load()
        self.server_state = ServerState()
        self._ssl: ssl.SSLContext | None = None
        self._ssl_lock = asyncio.Lock()
        # Live TLS connections (the provider's; the control API is plain HTTP), to drop them
        # when a refusal begins.
        self.tls_transports: set[asyncio.BaseTransport] = set()
        sim.state.droppers.append(self.drop_connections)

    def drop_connections(self) -> None:
        for transport in list(self.tls_transports):
            if isinstance(transport, asyncio.Transport):
                transport.abort()
        self.tls_transports.clear()

    def http1(self) -> asyncio.Protocol:
        # uvicorn's own protocol class, as uvicorn.Server builds it per connection.
        protocol: asyncio.Protocol = self.config.http_protocol_class(  # type: ignore[call-arg]
            config=self.config, server_state=self.server_state, app_state={}
        )
        return protocol

    def tls_protocol(self) -> asyncio.Protocol:
        return _AlpnProtocol(self)

    async def ssl_context(self) -> ssl.SSLContext:
        async with self._ssl_lock:
            if self._ssl is None:
                self._ssl = await asyncio.to_thread(server_ssl_context, self.tls_dir)
            return self._ssl

    async def serve(self, listener: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        listener.setblocking(False)
        tasks: set[asyncio.Task[None]] = set()
        while True:
            conn, _ = await loop.sock_accept(listener)
            task = asyncio.create_task(self._dispatch(conn))
            tasks.add(task)
            task.add_done_callback(tasks.discard)

    async def _dispatch(self, conn: socket.socket) -> None:
        loop = asyncio.get_running_loop()
        conn.setblocking(False)
        try:
            first = await _peek(loop, conn)
            if not first:
                conn.close()
                return
            if first[0] == _TLS_HANDSHAKE:
                if self.sim.state.refuse_connection():  # the provider, never the control API
                    reset_connection(conn)
                    return
                ctx = await self.ssl_context()
                transport, _ = await loop.connect_accepted_socket(
                    self.tls_protocol, conn, ssl=ctx, ssl_handshake_timeout=10
                )
                self.tls_transports = {t for t in self.tls_transports if not t.is_closing()}
                self.tls_transports.add(transport)
            else:
                await loop.connect_accepted_socket(self.http1, conn)
        except (OSError, TimeoutError, ssl.SSLError):
            conn.close()


class _AlpnProtocol(asyncio.Protocol):
    """Placed on a TLS connection after the handshake: becomes HTTP/2 or HTTP/1.1."""

    def __init__(self, server: FcmServer) -> None:
        self.server = server

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        ssl_obj = transport.get_extra_info("ssl_object")
        alpn = ssl_obj.selected_alpn_protocol() if ssl_obj is not None else None
        inner = self.server.h2_protocol() if alpn == "h2" else self.server.http1()
        transport.set_protocol(inner)
        inner.connection_made(transport)


async def _peek(loop: asyncio.AbstractEventLoop, conn: socket.socket) -> bytes:
    """The first byte the client sent, left in the socket for whoever reads it next."""
    ready = loop.create_future()

    def wake() -> None:
        if not ready.done():
            ready.set_result(None)

    loop.add_reader(conn.fileno(), wake)
    try:
        await asyncio.wait_for(ready, 30)
    finally:
        loop.remove_reader(conn.fileno())
    return conn.recv(1, socket.MSG_PEEK)


async def serve(
    host: str,
    port: int,
    log_level: str = "warning",
    ready: Any = None,
    tls_dir: Path | None = None,
) -> None:
    """Run the FCM simulator on the current loop until cancelled or signalled.

    TLS material: in `tls_dir` or $PUSHLINE_SIMULATOR_TLS_DIR, created before the port
    opens so clients can trust the CA from their first request; without either, in
    .simulators/tls, created on the first TLS connection, so a run that only ever speaks
    plain HTTP leaves no files behind.
    """
    await run_server(
        lambda tls: FcmServer(FCMSimulator(), tls, log_level), host, port, ready, tls_dir
    )


async def run_server(
    build: Callable[[Path], FcmServer],
    host: str,
    port: int,
    ready: Callable[[int], None] | None,
    tls_dir: Path | None,
) -> None:
    """Serve what `build` makes for the TLS directory, on this port machinery (FCM, and the
    Web Push and Push Kit simulators that share it), until cancelled."""
    configured = tls_dir or os.environ.get(TLS_DIR_ENV)
    server = build(Path(configured or DEFAULT_TLS_DIR))
    if configured:
        await server.ssl_context()
    listener = socket.create_server((host, port), backlog=1024)
    try:
        if ready is not None:
            ready(int(listener.getsockname()[1]))
        await server.serve(listener)
    finally:
        listener.close()
