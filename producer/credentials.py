"""Checking provider credentials on the way in, so a bad one is refused when it is stored,
not discovered as code 4 on the first push.

- an APNs `.p8` must parse as an EC private key (P-256, what Apple issues);
- an APNs certificate PEM must hold a certificate that is valid now, and its private key;
- an FCM service account must mint an OAuth2 token at its `token_uri` (trusting
  PUSHLINE_FCM_CA_FILE when set, as the worker does): the one check that proves Google
  (or the simulator) accepts it;
- a Huawei app id and client secret must get an OAuth 2.0 access token (client
  credentials) at PUSHLINE_HMS_TOKEN_URL (trusting PUSHLINE_HMS_CA_FILE when set).
"""

from __future__ import annotations

import json
from datetime import datetime

import google.auth.transport.requests
import httpx
import requests
from cryptography import x509
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from google.auth.exceptions import GoogleAuthError
from google.oauth2 import service_account

from producer.errors import InvalidRequest

MINT_TIMEOUT_S = 10.0


def _invalid(field: str, rule: str) -> InvalidRequest:
    return InvalidRequest(f"{field}: {rule}", [{"field": field, "rule": rule}])


def check_apns_key(pem: str, field: str = "apns.key") -> None:
    try:
        key = load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise _invalid(field, "must be the .p8 file Apple issued (a PEM EC private key)") from exc
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise _invalid(field, "must be an EC private key (Apple's .p8), not another key type")


def check_apns_certificate(pem: str, now: datetime, field: str = "apns.certificate") -> None:
    try:
        cert = x509.load_pem_x509_certificate(pem.encode())
    except ValueError as exc:
        raise _invalid(field, "must be a PEM certificate with its private key") from exc
    if cert.not_valid_after_utc <= now:
        expired = cert.not_valid_after_utc.isoformat(timespec="seconds")
        raise _invalid(field, f"the certificate expired at {expired}; renew it at Apple")
    if cert.not_valid_before_utc > now:
        raise _invalid(field, "the certificate is not valid yet")
    try:
        load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise _invalid(field, "the PEM must also hold the certificate's private key") from exc


def service_account_project(text: str, field: str = "fcm.service_account") -> str:
    """The project id of a service account JSON; raises InvalidRequest when it is not one."""
    try:
        info = json.loads(text)
        project = info["project_id"]
        info["private_key"], info["client_email"], info["token_uri"]  # noqa: B018
    except (ValueError, KeyError, TypeError) as exc:
        raise _invalid(field, f"must be a service account JSON (missing or bad {exc})") from exc
    if not isinstance(project, str) or not project:
        raise _invalid(field, "project_id must be a non-empty string")
    return project


def check_service_account(
    text: str, ca_file: str | None, field: str = "fcm.service_account"
) -> str:
    """Mints one OAuth2 token with the service account; returns its project id."""
    project = service_account_project(text, field)
    info = json.loads(text)
    try:
        cred = service_account.Credentials.from_service_account_info(
            info, scopes=["https://www.googleapis.com/auth/firebase.messaging"]
        )
        session = requests.Session()
        session.verify = ca_file or True
        cred.refresh(_Request(session, ca_file or True))
    except (GoogleAuthError, ValueError, requests.RequestException) as exc:
        raise _invalid(
            field, f"could not mint a token at {info['token_uri']}: {exc}".replace("\n", " ")
        ) from exc
    return project


class _Request(google.auth.transport.requests.Request):
    """google-auth's transport with our CA bundle and a timeout on every call."""

    def __init__(self, session: requests.Session, verify: str | bool) -> None:
        super().__init__(session)
        self._verify = verify

    def __call__(self, *args: object, **kwargs: object) -> object:
        kwargs.setdefault("verify", self._verify)
        kwargs["timeout"] = MINT_TIMEOUT_S
        return super().__call__(*args, **kwargs)


def check_hms_client(
    app_id: str, client_secret: str, token_url: str, ca_file: str | None, field: str = "hms"
) -> None:
    """Gets one Push Kit access token with the app id and secret (and throws it away)."""
    form = {
        "grant_type": "client_credentials",
        "client_id": app_id,
        "client_secret": client_secret,
    }
    try:
        resp = httpx.post(token_url, data=form, verify=ca_file or True, timeout=MINT_TIMEOUT_S)
    except httpx.HTTPError as exc:
        raise _invalid(field, f"could not reach the token endpoint {token_url}: {exc}") from exc
    try:
        body = resp.json()
    except ValueError:
        body = {}
    if resp.status_code != 200 or not isinstance(body, dict) or not body.get("access_token"):
        said = body.get("error_description") if isinstance(body, dict) else None
        rule = f"Huawei refused the app id and client secret ({said or resp.status_code})"
        raise _invalid(field, rule)
