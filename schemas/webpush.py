"""Web Push facts both sides need: what a subscription and a VAPID key look like (pure).

A W3C push subscription is an endpoint URL (the Registration's token) and two keys, both
base64url without padding as browsers give them: `p256dh`, the browser's P-256 public key
(65 bytes, uncompressed point), and `auth`, a 16-byte secret (RFC 8291 §3). An app's VAPID
key pair is a P-256 key (RFC 8292); browsers take its public half, base64url of the
uncompressed point, as `applicationServerKey` when they subscribe.
"""

from __future__ import annotations

import base64
import binascii
import re
from urllib.parse import urlsplit

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

P256DH_BYTES = 65
AUTH_BYTES = 16
#: RFC 8292 §2: `sub` is a contact URI, mailto: or https:.
_SUBJECT = re.compile(r"^(mailto:[^@\s]+@[^@\s]+|https://[^\s/]+(/\S*)?)$", re.IGNORECASE)


def b64url_decode(value: str) -> bytes:
    """base64url with or without padding; ValueError for anything else."""
    if not re.fullmatch(r"[A-Za-z0-9_\-]*={0,2}", value):
        raise ValueError("not base64url")
    stripped = value.rstrip("=")
    try:
        return base64.urlsafe_b64decode(stripped + "=" * (-len(stripped) % 4))
    except (binascii.Error, ValueError):
        raise ValueError("not base64url") from None


def b64url(raw: bytes) -> str:
    return base64.urlsafe_b64encode(raw).rstrip(b"=").decode()


def check_endpoint(endpoint: str) -> str | None:
    """The rule an endpoint breaks, or None: an absolute https URL (RFC 8030 §8)."""
    parts = urlsplit(endpoint)
    if parts.scheme != "https" or not parts.hostname:
        return "a Web Push endpoint is an https:// URL with a host"
    return None


def check_p256dh(value: str) -> str | None:
    """The rule `keys.p256dh` breaks, or None: a P-256 public key, uncompressed, base64url."""
    try:
        raw = b64url_decode(value)
        if len(raw) != P256DH_BYTES or raw[0] != 4:
            raise ValueError
        ec.EllipticCurvePublicKey.from_encoded_point(ec.SECP256R1(), raw)
    except ValueError:
        return "base64url of a 65-byte uncompressed P-256 public key (starts 0x04)"
    return None


def check_auth(value: str) -> str | None:
    """The rule `keys.auth` breaks, or None: 16 bytes, base64url."""
    try:
        raw = b64url_decode(value)
    except ValueError:
        raw = b""
    if len(raw) != AUTH_BYTES:
        return "base64url of a 16-byte authentication secret"
    return None


def check_subject(subject: str) -> str | None:
    """The rule a VAPID `sub` breaks, or None."""
    if not _SUBJECT.match(subject):
        return "a contact URI: mailto:<address> or https://<host>"
    return None


def load_vapid_key(pem: str) -> ec.EllipticCurvePrivateKey:
    """The app's VAPID private key; ValueError unless it is a P-256 key in PEM."""
    try:
        key = serialization.load_pem_private_key(pem.encode(), password=None)
    except (ValueError, TypeError) as exc:
        raise ValueError(f"not a PEM private key without a password ({exc})") from None
    if not isinstance(key, ec.EllipticCurvePrivateKey) or key.curve.name != "secp256r1":
        raise ValueError("VAPID keys are P-256 (prime256v1) EC keys")
    return key


def public_key_b64(key: ec.EllipticCurvePrivateKey | ec.EllipticCurvePublicKey) -> str:
    """The applicationServerKey form: base64url of the uncompressed point."""
    public = key.public_key() if isinstance(key, ec.EllipticCurvePrivateKey) else key
    raw = public.public_bytes(
        serialization.Encoding.X962, serialization.PublicFormat.UncompressedPoint
    )
    return b64url(raw)


def new_vapid_pem() -> str:
    """A fresh VAPID private key, PKCS#8 PEM."""
    key = ec.generate_private_key(ec.SECP256R1())
    return key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()


def origin(endpoint: str) -> str:
    """The `aud` of a VAPID token for this endpoint: scheme, host and port if not default."""
    parts = urlsplit(endpoint)
    host = parts.hostname or ""
    if ":" in host:
        host = f"[{host}]"
    default = {"https": 443, "http": 80}.get(parts.scheme)
    port = f":{parts.port}" if parts.port and parts.port != default else ""
    return f"{parts.scheme}://{host}{port}"
