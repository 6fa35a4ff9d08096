"""Provider credentials for the simulators: an APNs .p8 key and a Google service account.

Real keys of the real formats, generated locally, so aioapns and firebase-admin run
unmodified against the simulators.
"""

from __future__ import annotations

import json
import secrets
from dataclasses import dataclass

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa


@dataclass(frozen=True)
class ApnsKey:
    key_pem: str  # PKCS#8, as Apple's .p8 download
    key_id: str
    team_id: str


def make_apns_key(team_id: str | None = None) -> ApnsKey:
    key = ec.generate_private_key(ec.SECP256R1())
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return ApnsKey(
        key_pem=pem,
        key_id=secrets.token_hex(5).upper(),
        team_id=team_id or secrets.token_hex(5).upper(),
    )


def make_service_account(project_id: str, token_uri: str) -> dict[str, str]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    ).decode()
    return {
        "type": "service_account",
        "project_id": project_id,
        "private_key_id": secrets.token_hex(20),
        "private_key": pem,
        "client_email": f"pushline@{project_id}.iam.gserviceaccount.com",
        "client_id": str(secrets.randbelow(10**20)),
        "token_uri": token_uri,
    }


def service_account_json(info: dict[str, str]) -> str:
    return json.dumps(info)
