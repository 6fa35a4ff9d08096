"""A fake FCM HTTP v1 API with Google's OAuth2 token endpoint, as one Starlette app.

firebase-admin only turns an answer into a typed exception (UnregisteredError, ...) when
the error body has Google's shape with an FcmError detail, so every error here is built
by `google_error`. Control routes live on the same app under /control.
"""

from __future__ import annotations

import json
import re
import secrets
import time
import urllib.parse
import uuid
from dataclasses import dataclass
from typing import Any

import jwt
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from cryptography.hazmat.primitives.serialization import load_pem_public_key
from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

from simulators.core import (
    REDACTED,
    ControlError,
    SimState,
    control_routes,
    load_public_key_pem,
)

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


def google_error(
    status: int,
    google_status: str,
    message: str,
    fcm_code: str | None = None,
    field: str | None = None,
    retry_after: int | None = None,
) -> JSONResponse:
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
    headers = {"Retry-After": str(retry_after)} if retry_after is not None else None
    return JSONResponse({"error": error}, status_code=status, headers=headers)


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


class FCMSimulator:
    """Service accounts, access tokens and outcome state for the fake FCM."""

    def __init__(self) -> None:
        self.state = SimState(
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

    # -- HTTP endpoints ----------------------------------------------------------------

    async def token_endpoint(self, request: Request) -> Response:
        form = urllib.parse.parse_qs((await request.body()).decode("utf-8", "replace"))
        grant_type = form.get("grant_type", [""])[0]
        assertion = form.get("assertion", [""])[0]
        if grant_type != JWT_BEARER:
            return JSONResponse(
                {"error": "unsupported_grant_type", "error_description": "Invalid grant_type"},
                status_code=400,
            )
        result = self.grant(assertion, str(request.url), time.time())
        if isinstance(result, str):
            return JSONResponse(
                {"error": "invalid_grant", "error_description": result}, status_code=400
            )
        access = "ya29.sim-" + secrets.token_urlsafe(32)
        self.access_tokens[access] = result
        return JSONResponse(
            {"access_token": access, "expires_in": ACCESS_TOKEN_TTL_S, "token_type": "Bearer"}
        )

    async def send_endpoint(self, request: Request) -> Response:
        project = request.path_params["project"]
        auth = request.headers.get("authorization", "")
        scheme, _, value = auth.partition(" ")
        granted = self.access_tokens.get(value.strip()) if scheme.lower() == "bearer" else None
        if granted is None or granted.expires_at < time.time():
            # Counted (under no token) so a benchmark sees auth failures in the totals.
            self.state.record("", "UNAUTHENTICATED")
            return google_error(
                401,
                "UNAUTHENTICATED",
                "Request had invalid authentication credentials. Expected OAuth 2 access "
                "token, login cookie or other valid authentication credential.",
            )
        if granted.project_id != project:
            self.state.record("", "PERMISSION_DENIED")
            return google_error(
                403,
                "PERMISSION_DENIED",
                f"Permission 'cloudmessaging.messages.create' denied on resource "
                f"'//cloudmessaging.googleapis.com/projects/{project}' (or it may not exist).",
            )
        raw = await request.body()
        state = self.state
        try:
            body = json.loads(raw)
        except ValueError:
            state.record("", "INVALID_ARGUMENT")
            return google_error(400, "INVALID_ARGUMENT", "Invalid JSON payload received.")
        message = body.get("message") if isinstance(body, dict) else None

        def headers() -> dict[str, str]:
            out = {k.lower(): v for k, v in request.headers.items()}
            out["authorization"] = REDACTED
            return out

        try:
            target = validate_message(message)
        except InvalidMessage as exc:
            token = message.get("token") if isinstance(message, dict) else None
            state.record(str(token or ""), "INVALID_ARGUMENT", headers, body)
            return google_error(400, "INVALID_ARGUMENT", exc.message, "INVALID_ARGUMENT", exc.field)
        decision = state.decide(target, project)
        if decision is not None:
            state.record(target, decision.reason, headers, body)
            status, google_status, text = FCM_ERRORS[decision.reason]
            retry = decision.retry_after if status in (429, 503) else None
            if decision.reason == "INVALID_ARGUMENT":
                text = _TOKEN_INVALID
                return google_error(
                    status, google_status, text, decision.reason, "message.token", retry
                )
            return google_error(status, google_status, text, decision.reason, None, retry)
        if body.get("validate_only") is True:
            state.record(target, "validated", headers, body)
            return JSONResponse({"name": f"projects/{project}/messages/fake_message_id"})
        state.record(target, "accepted", headers, body)
        return JSONResponse({"name": f"projects/{project}/messages/{uuid.uuid4().hex}"})


def create_app(sim: FCMSimulator | None = None) -> Starlette:
    """The FCM simulator app: /token, /v1/projects/{project}/messages:send, /control/*."""
    sim = sim or FCMSimulator()
    routes = [
        Route("/token", sim.token_endpoint, methods=["POST"]),
        Route("/v1/projects/{project}/messages:send", sim.send_endpoint, methods=["POST"]),
        *control_routes(sim.state, {"/control/service-accounts": sim.register_service_account}),
    ]
    app = Starlette(routes=routes)
    app.state.sim = sim
    return app


async def serve(
    host: str,
    port: int,
    log_level: str = "warning",
    ready: Any = None,
) -> None:
    """Run the FCM simulator on the current loop until cancelled or signalled."""
    import asyncio

    import uvicorn

    config = uvicorn.Config(
        create_app(),
        host=host,
        port=port,
        log_level=log_level,
        access_log=False,
        lifespan="off",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()
            raise RuntimeError("FCM simulator stopped before starting")
        await asyncio.sleep(0.01)
    if ready is not None:
        ready(int(server.servers[0].sockets[0].getsockname()[1]))
    await task
