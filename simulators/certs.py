"""TLS material for the simulators: a private CA, a server certificate, APNs client certs.

Everything lives in one directory so the APNs simulator, the tests and the worker can share
it. Files are reused when present, so restarting a simulator does not invalidate the CA
that clients already trust.
"""

from __future__ import annotations

import datetime as dt
import fcntl
import os
import re
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.hazmat.primitives.asymmetric.types import CertificateIssuerPrivateKeyTypes
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

CA_CERT = "ca.pem"
CA_KEY = "ca.key"
SERVER_CERT = "server.pem"
SERVER_KEY = "server.key"
_LOCK = ".tls.lock"


@dataclass(frozen=True)
class TLSFiles:
    """Paths of the simulator's TLS files (all PEM)."""

    dir: Path
    ca_cert: Path
    ca_key: Path
    server_cert: Path
    server_key: Path


def _files(directory: Path) -> TLSFiles:
    return TLSFiles(
        dir=directory,
        ca_cert=directory / CA_CERT,
        ca_key=directory / CA_KEY,
        server_cert=directory / SERVER_CERT,
        server_key=directory / SERVER_KEY,
    )


@contextmanager
def _locked(directory: Path) -> Iterator[None]:
    # Several processes (simulator, test runner, worker) may race to create the files.
    directory.mkdir(parents=True, exist_ok=True)
    with open(directory / _LOCK, "w") as fh:
        fcntl.flock(fh, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(fh, fcntl.LOCK_UN)


def _write(path: Path, data: bytes, private: bool = False) -> None:
    # Write-then-rename so a reader never sees a half-written PEM.
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_bytes(data)
    if private:
        os.chmod(tmp, 0o600)
    os.replace(tmp, path)


def ensure_tls(dir: Path) -> TLSFiles:  # noqa: A002 - name fixed by the shared API
    """Create (or reuse) the CA and a server cert valid for 127.0.0.1 and localhost."""
    directory = Path(dir)
    files = _files(directory)
    with _locked(directory):
        paths = (files.ca_cert, files.ca_key, files.server_cert, files.server_key)
        if all(p.exists() for p in paths):
            return files
        ca = trustme.CA(organization_name="Pushline simulator CA")
        server = ca.issue_cert("127.0.0.1", "localhost")
        _write(files.ca_cert, ca.cert_pem.bytes())
        _write(files.ca_key, ca.private_key_pem.bytes(), private=True)
        _write(files.server_cert, b"".join(p.bytes() for p in server.cert_chain_pems))
        _write(files.server_key, server.private_key_pem.bytes(), private=True)
    return files


def _load_ca(files: TLSFiles) -> tuple[x509.Certificate, CertificateIssuerPrivateKeyTypes]:
    cert = x509.load_pem_x509_certificate(files.ca_cert.read_bytes())
    key = serialization.load_pem_private_key(files.ca_key.read_bytes(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey | rsa.RSAPrivateKey):
        raise TypeError(f"unsupported CA key type {type(key).__name__}")
    return cert, key


def issue_client_cert(dir: Path, topic: str) -> Path:  # noqa: A002
    """Issue an APNs-style client certificate for `topic`; returns a PEM with cert + key.

    The subject carries UID=<topic> like Apple's push certificates, which is where aioapns
    (and the simulator) read the topic from.
    """
    files = ensure_tls(Path(dir))
    ca_cert, ca_key = _load_ca(files)
    key = ec.generate_private_key(ec.SECP256R1())
    now = dt.datetime.now(dt.UTC)
    subject = x509.Name(
        [
            x509.NameAttribute(NameOID.USER_ID, topic),
            x509.NameAttribute(NameOID.COMMON_NAME, f"Apple Push Services: {topic}"),
            x509.NameAttribute(NameOID.ORGANIZATION_NAME, "Pushline simulator"),
        ]
    )
    ca_ski = ca_cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(ca_cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.CLIENT_AUTH]), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_subject_key_identifier(ca_ski),
            critical=False,
        )
        .sign(ca_key, hashes.SHA256())
    )
    safe = re.sub(r"[^A-Za-z0-9._-]", "_", topic)
    out = files.dir / f"client-{safe}.pem"
    pem = cert.public_bytes(serialization.Encoding.PEM) + key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    _write(out, pem, private=True)
    return out


def client_cert_topic(der: bytes) -> str | None:
    """The UID (topic) of a DER client certificate, or None if it has none."""
    cert = x509.load_der_x509_certificate(der)
    attrs = cert.subject.get_attributes_for_oid(NameOID.USER_ID)
    if not attrs:
        return None
    value = attrs[0].value
    return value if isinstance(value, str) else value.decode()
