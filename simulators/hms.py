"""A fake Huawei Push Kit: the OAuth 2.0 token endpoint and the messages:send API.

Apps are registered through the control API (`/control/hms-apps`: app id, client secret,
and how long its access tokens live). The token endpoint (`POST /oauth2/v3/token`) takes
`grant_type=client_credentials` with the app id as `client_id` and its secret, and issues
an access token that expires; the send endpoint (`POST /v1/{appId}/messages:send`) checks
the Bearer token (unknown or another app's: 80200001; expired: 80200003, both HTTP 401)
and the message as Push Kit does: one of token / topic / condition, 1..1000 tokens, `data`
a string, `android.urgency`, `ttl` ("<seconds>s", at most 15 days), `collapse_key`
(-1..100), a notification with a title, a body and a click action, the whole message at
most 4096 bytes (80300008). Answers have Push Kit's shape: `{"code", "msg", "requestId"}`,
HTTP 200 for success and for 80100000 (some tokens failed, listed in `msg`).

Outcomes are scripted per token or token prefix like the other simulators (reasons in
HMS_ERRORS: INVALID_TOKEN, MESSAGE_TOO_BIG, FLOW_CONTROL, TOO_MANY_REQUESTS, INTERNAL_ERROR,
...), with outages, error rates, quotas with Retry-After and refused connections through
the same /control routes (simulators/core.py); `/control/access-tokens/expire` expires
every access token issued, so a client must refresh. Counts are per device token.
One port serves TLS (HTTP/2 or HTTP/1.1 by ALPN) and plain HTTP/1.1 (control), on the
FCM simulator's machinery.
"""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import urllib.parse
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.core import REDACTED, ControlError, OAuthH2State, control_routes
from simulators.fcm import FcmServer, run_server
from simulators.h2server import H2ServerProtocol, H2Stream, JsonAnswer, capture_headers

#: Scriptable reasons -> (HTTP status, Push Kit result code or None, message).
HMS_ERRORS: dict[str, tuple[int, str | None, str]] = {
    "PARTIAL_FAILURE": (200, "80100000", "Some tokens are successfully sent, others fail."),
    "PARAMETER_ERROR": (400, "80100001", "Some request parameters are incorrect."),
    "MESSAGE_STRUCTURE_ERROR": (400, "80100003", "Incorrect message structure."),
    "TTL_ERROR": (400, "80100004", "The message expiry time is earlier than the current time."),
    "COLLAPSE_KEY_ERROR": (400, "80100013", "The collapse_key parameter is incorrect."),
    "SENSITIVE_CONTENT": (400, "80100016", "The message contains sensitive information."),
    "OAUTH_ERROR": (401, "80200001", "Oauth authentication error."),
    "OAUTH_TOKEN_EXPIRED": (401, "80200003", "Oauth Token expired."),
    "NO_PERMISSION": (403, "80300002", "No permission to send a message to the device."),
    "INVALID_TOKEN": (400, "80300007", "All the tokens are invalid."),
    "MESSAGE_TOO_BIG": (413, "80300008", "The message body size exceeds the default value."),
    "TOKEN_COUNT_ERROR": (400, "80300010", "The number of tokens is not within 1..1000."),
    "INTERNAL_ERROR": (500, "81000001", "System internal error."),
    "TOO_MANY_REQUESTS": (429, None, "Too many requests."),
    "FLOW_CONTROL": (503, None, "Flow control: the app is over its QPS quota."),
}
HMS_REASONS: dict[str, int] = {reason: status for reason, (status, _, _) in HMS_ERRORS.items()}
SUCCESS = "80000000"
MAX_MESSAGE_BYTES = 4096
MAX_TTL_S = 15 * 24 * 3600
MAX_TOKENS = 1000
ACCESS_TOKEN_TTL_S = 3600
TOKEN_PATH = "/oauth2/v3/token"
_SEND_PATH = re.compile(r"^/v1/([A-Za-z0-9_.\-]+)/messages:send$")
_DEVICE_TOKEN = re.compile(r"^[A-Za-z0-9_:+/=.\-]{20,512}$")
_TTL = re.compile(r"^(\d+)(\.\d{1,9})?s$")
_URGENCIES = frozenset({"HIGH", "NORMAL"})


HmsAnswer = JsonAnswer  # one HTTP answer, for the HTTP/1.1 app and the HTTP/2 server


@dataclass(frozen=True)
class HmsApp:
    app_id: str
    client_secret: str
    token_ttl_s: int = ACCESS_TOKEN_TTL_S


@dataclass(frozen=True)
class Grant:
    app_id: str
    expires_at: float


class InvalidMessage(Exception):
    """A message Push Kit refuses: its reason in HMS_ERRORS and a precise message."""

    def __init__(self, reason: str, message: str) -> None:
        super().__init__(message)
        self.reason, self.message = reason, message


def push_answer(
    reason: str, message: str | None = None, retry_after: int | None = None
) -> HmsAnswer:
    status, code, text = HMS_ERRORS[reason]
    body: dict[str, Any] = {"msg": message or text, "requestId": _request_id()}
    if code is not None:
        body["code"] = code
    headers = {"retry-after": str(retry_after)} if retry_after is not None else {}
    return HmsAnswer(status, body, headers)


def _request_id() -> str:
    return f"{int(time.time() * 1000)}{secrets.randbelow(10**6):06d}"


def validate_message(message: Any) -> list[str]:
    """Check what Push Kit checks on a message; returns its device tokens (or the topic /
    condition as one target)."""
    if not isinstance(message, dict):
        raise InvalidMessage("MESSAGE_STRUCTURE_ERROR", "message must be an object.")
    targets = [k for k in ("token", "topic", "condition") if k in message]
    if len(targets) != 1:
        raise InvalidMessage(
            "MESSAGE_STRUCTURE_ERROR", "Exactly one of token, topic, condition must be set."
        )
    data = message.get("data")
    if data is not None and not isinstance(data, str):
        raise InvalidMessage("MESSAGE_STRUCTURE_ERROR", "message.data must be a string.")
    android = message.get("android", {})
    if not isinstance(android, dict):
        raise InvalidMessage("MESSAGE_STRUCTURE_ERROR", "message.android must be an object.")
    _check_android(android)
    size = len(json.dumps(message, separators=(",", ":"), ensure_ascii=False).encode())
    if size > MAX_MESSAGE_BYTES:
        raise InvalidMessage("MESSAGE_TOO_BIG", f"Message of {size} bytes exceeds 4096.")
    if targets[0] != "token":
        value = message[targets[0]]
        if not isinstance(value, str) or not value:
            raise InvalidMessage("PARAMETER_ERROR", f"message.{targets[0]} must be a string.")
        return [f"{targets[0]}:{value}"]
    tokens = message["token"]
    if not isinstance(tokens, list) or not 1 <= len(tokens) <= MAX_TOKENS:
        raise InvalidMessage("TOKEN_COUNT_ERROR", "message.token must list 1 to 1000 tokens.")
    if not all(isinstance(t, str) for t in tokens):
        raise InvalidMessage("MESSAGE_STRUCTURE_ERROR", "message.token must list strings.")
    return list(tokens)


def _check_android(android: dict[str, Any]) -> None:
    urgency = android.get("urgency")
    if urgency is not None and urgency not in _URGENCIES:
        raise InvalidMessage("PARAMETER_ERROR", "android.urgency must be HIGH or NORMAL.")
    ttl = android.get("ttl")
    if ttl is not None:
        match = _TTL.match(ttl) if isinstance(ttl, str) else None
        if match is None or int(match.group(1)) > MAX_TTL_S:
            raise InvalidMessage("TTL_ERROR", "android.ttl must be '<seconds>s', at most 15 days.")
    key = android.get("collapse_key")
    if key is not None and (
        not isinstance(key, int) or isinstance(key, bool) or not -1 <= key <= 100
    ):
        raise InvalidMessage("COLLAPSE_KEY_ERROR", "android.collapse_key must be -1..100.")
    note = android.get("notification")
    if note is None:
        return
    if not isinstance(note, dict):
        raise InvalidMessage("MESSAGE_STRUCTURE_ERROR", "android.notification must be an object.")
    localized = note.get("title_loc_key") or note.get("body_loc_key")
    for name in ("title", "body"):
        if not localized and not (isinstance(note.get(name), str) and note[name]):
            raise InvalidMessage(
                "MESSAGE_STRUCTURE_ERROR", f"android.notification.{name} required."
            )
    click = note.get("click_action")
    kind = click.get("type") if isinstance(click, dict) else None
    if kind not in (1, 2, 3):
        raise InvalidMessage(
            "MESSAGE_STRUCTURE_ERROR", "android.notification.click_action.type must be 1, 2 or 3."
        )
    assert isinstance(click, dict)
    if kind == 1 and not (click.get("intent") or click.get("action")):
        raise InvalidMessage(
            "MESSAGE_STRUCTURE_ERROR", "click_action type 1 needs intent or action."
        )
    if kind == 2 and not str(click.get("url", "")).startswith("https://"):
        raise InvalidMessage("MESSAGE_STRUCTURE_ERROR", "click_action type 2 needs an https url.")


class HmsState(OAuthH2State):
    """The fake Push Kit's state and counts (tokens, HTTP/2 connections, requests)."""


class HmsSimulator:
    """Apps, access tokens and outcome state of the fake Push Kit."""

    def __init__(self) -> None:
        self.state = HmsState(
            HMS_REASONS,
            quota_reason="FLOW_CONTROL",
            device_rate_reason="TOO_MANY_REQUESTS",
            default_error_reason="INTERNAL_ERROR",
        )
        self.apps: dict[str, HmsApp] = {}
        self.grants: dict[str, Grant] = {}

    # -- control ----------------------------------------------------------------------------

    def register_app(self, data: dict[str, Any]) -> None:
        app_id, secret = data.get("app_id"), data.get("client_secret")
        if not isinstance(app_id, str) or not app_id or not isinstance(secret, str) or not secret:
            raise ControlError("app_id and client_secret required (strings)")
        ttl = data.get("token_ttl_s", ACCESS_TOKEN_TTL_S)
        if not isinstance(ttl, int) or isinstance(ttl, bool) or not 1 <= ttl <= 86400:
            raise ControlError("token_ttl_s must be a whole number of seconds within 1..86400")
        self.apps[app_id] = HmsApp(app_id, secret, ttl)

    def expire_access_tokens(self, _: dict[str, Any]) -> None:
        """Every access token issued is expired from now on (80200003 until refreshed)."""
        self.grants = {k: Grant(g.app_id, 0.0) for k, g in self.grants.items()}

    # -- the OAuth 2.0 token endpoint -------------------------------------------------------

    def token_answer(self, raw: bytes) -> HmsAnswer:
        form = urllib.parse.parse_qs(raw.decode("utf-8", "replace"))
        grant_type = form.get("grant_type", [""])[0]
        client_id = form.get("client_id", [""])[0]
        secret = form.get("client_secret", [""])[0]
        if grant_type != "client_credentials":
            return HmsAnswer(400, _oauth_error(1102, "unsupported grant_type"))
        app = self.apps.get(client_id)
        if app is None:
            return HmsAnswer(400, _oauth_error(1101, "invalid client_id", 20003))
        if not secrets.compare_digest(app.client_secret, secret):
            return HmsAnswer(400, _oauth_error(1101, "invalid client_secret", 20001))
        access = "CV" + secrets.token_urlsafe(32)
        now = time.time()
        if len(self.grants) > 10_000:  # drop expired ones now and then
            self.grants = {k: g for k, g in self.grants.items() if g.expires_at > now}
        self.grants[access] = Grant(app.app_id, now + app.token_ttl_s)
        self.state.tokens_issued += 1
        return HmsAnswer(
            200, {"access_token": access, "expires_in": app.token_ttl_s, "token_type": "Bearer"}
        )

    # -- messages:send ----------------------------------------------------------------------

    def send_answer(
        self,
        app_id: str,
        authorization: str,
        raw: bytes,
        headers: Callable[[], dict[str, str]],
    ) -> HmsAnswer:
        scheme, _, value = authorization.partition(" ")
        grant = self.grants.get(value.strip()) if scheme.lower() == "bearer" else None
        state = self.state
        if grant is None or grant.app_id != app_id:
            state.record("", "OAUTH_ERROR")  # counted under no token, as the FCM simulator does
            return push_answer("OAUTH_ERROR")
        if grant.expires_at < time.time():
            state.record("", "OAUTH_TOKEN_EXPIRED")
            return push_answer("OAUTH_TOKEN_EXPIRED")
        try:
            body = json.loads(raw)
            if not isinstance(body, dict):
                raise ValueError("not an object")
            validate_only = body.get("validate_only", False)
            if not isinstance(validate_only, bool):
                raise InvalidMessage("PARAMETER_ERROR", "validate_only must be true or false.")
            tokens = validate_message(body.get("message"))
        except InvalidMessage as exc:
            message = body.get("message") if isinstance(body, dict) else None
            listed = message.get("token") if isinstance(message, dict) else None
            token = listed[0] if isinstance(listed, list) and listed else ""
            state.record(str(token), exc.reason, headers, body)
            return push_answer(exc.reason, exc.message)
        except ValueError:
            state.record("", "MESSAGE_STRUCTURE_ERROR")
            return push_answer("MESSAGE_STRUCTURE_ERROR", "The body is not a JSON object.")
        return self._deliver(app_id, tokens, validate_only, headers, body)

    def _deliver(
        self,
        app_id: str,
        tokens: list[str],
        validate_only: bool,
        headers: Callable[[], dict[str, str]],
        body: dict[str, Any],
    ) -> HmsAnswer:
        """Each token's outcome; one answer for the request, as Push Kit gives."""
        state = self.state
        failed: list[tuple[str, str, int | None]] = []  # (token, reason, retry after)
        for token in tokens:
            decision = state.decide(token, app_id) if _known(token) else None
            reason = decision.reason if decision else None if _known(token) else "INVALID_TOKEN"
            if reason is None:
                state.record(token, "validated" if validate_only else "accepted", headers, body)
                continue
            state.record(token, reason, headers, body)
            failed.append((token, reason, decision.retry_after if decision else None))
        if not failed:
            return HmsAnswer(200, {"code": SUCCESS, "msg": "Success", "requestId": _request_id()})
        token, reason, retry_after = failed[0]
        if reason == "PARTIAL_FAILURE" or len(failed) < len(tokens):
            # Push Kit's partial answer: HTTP 200, the failed tokens listed in `msg`.
            msg = {
                "success": len(tokens) - len(failed),
                "failure": len(failed),
                "illegal_tokens": [t for t, _, _ in failed],
            }
            return HmsAnswer(
                200, {"code": "80100000", "msg": json.dumps(msg), "requestId": _request_id()}
            )
        retry = retry_after if HMS_REASONS[reason] in (429, 503) else None
        return push_answer(reason, retry_after=retry)

    # -- HTTP/1.1 (Starlette) ---------------------------------------------------------------

    async def token_endpoint(self, request: Request) -> Response:
        return _json_response(self.token_answer(await request.body()))

    async def send_endpoint(self, request: Request) -> Response:
        raw = await request.body()

        def headers() -> dict[str, str]:
            out = {k.lower(): v for k, v in request.headers.items()}
            out["authorization"] = REDACTED
            return out

        answer = self.send_answer(
            request.path_params["app"], request.headers.get("authorization", ""), raw, headers
        )
        return _json_response(answer)


def _known(token: str) -> bool:
    """A token of Push Kit's shape (letters, digits and a few symbols, 20..512)."""
    return token.startswith(("topic:", "condition:")) or bool(_DEVICE_TOKEN.match(token))


def _oauth_error(error: int, description: str, sub_error: int | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"error": error, "error_description": description}
    if sub_error is not None:
        body["sub_error"] = sub_error
    return body


def _json_response(answer: HmsAnswer) -> JSONResponse:
    headers = {"Retry-After": answer.headers["retry-after"]} if answer.headers else None
    return JSONResponse(answer.body, status_code=answer.status, headers=headers)


def create_app(sim: HmsSimulator) -> Starlette:
    """Token (`POST /oauth2/v3/token`), send (`POST /v1/{app}/messages:send`), `/control/*`."""
    routes = [
        Route(TOKEN_PATH, sim.token_endpoint, methods=["POST"]),
        Route("/v1/{app}/messages:send", sim.send_endpoint, methods=["POST"]),
        *control_routes(
            sim.state,
            {
                "/control/hms-apps": sim.register_app,
                "/control/access-tokens/expire": sim.expire_access_tokens,
            },
        ),
    ]
    app = Starlette(routes=routes)
    app.state.sim = sim
    return app


class HmsH2Protocol(H2ServerProtocol):
    """The token and send endpoints over HTTP/2 (what httpx speaks to a TLS server)."""

    json_content_type = b"application/json;charset=UTF-8"

    def __init__(self, sim: HmsSimulator) -> None:
        super().__init__()
        self.sim = sim

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        self.sim.state.h2_connections += 1
        super().connection_made(transport)

    def handle(self, stream_id: int, stream: H2Stream) -> None:
        sim = self.sim
        path = stream.path.decode("latin-1")
        match = _SEND_PATH.match(path)
        if stream.method != b"POST":
            answer = HmsAnswer(405, {"msg": "Method not allowed."})
        elif match is not None:
            sim.state.h2_requests += 1
            answer = sim.send_answer(
                match.group(1),
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
        elif path == TOKEN_PATH:
            answer = sim.token_answer(bytes(stream.body))
        else:
            answer = HmsAnswer(404, {"msg": "Not found."})
        self.respond_json(stream_id, answer, False)


def build_server(tls_dir: Path, log_level: str = "warning") -> tuple[HmsSimulator, FcmServer]:
    """The simulator on the FCM simulator's two-protocol port machinery."""
    sim = HmsSimulator()
    server = FcmServer(
        sim,  # type: ignore[arg-type]  # FcmServer reads only its state
        tls_dir,
        log_level,
        app=create_app(sim),
        h2=lambda: HmsH2Protocol(sim),
    )
    return sim, server


async def serve(
    host: str,
    port: int,
    log_level: str = "warning",
    ready: Callable[[int], None] | None = None,
    tls_dir: Path | None = None,
) -> None:
    """Run the Push Kit simulator until cancelled. TLS material as for the FCM simulator."""
    await run_server(lambda tls: build_server(tls, log_level)[1], host, port, ready, tls_dir)
