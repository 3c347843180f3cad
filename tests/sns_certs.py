"""A certificate authority made in the test, and SNS messages signed under it (for `BROKER_SNS_CA_BUNDLE`)."""

from __future__ import annotations

import base64
import threading
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")


@dataclass(frozen=True)
class CertAuthority:
    key: rsa.RSAPrivateKey
    cert: x509.Certificate
    bundle: str  # the root as a PEM file


def make_ca(directory: Path, name: str = "Broker Test Root CA") -> CertAuthority:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .issuer_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=365))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False), critical=True
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    bundle = directory / f"{name.replace(' ', '-')}.pem"
    bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return CertAuthority(key, cert, str(bundle))


def leaf_pem(ca: CertAuthority, key: rsa.RSAPrivateKey, name: str = "sns.amazonaws.com") -> bytes:
    """A signing certificate for `name`, issued by `ca`, valid from yesterday for 30 days."""
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)]))
        .issuer_name(ca.cert.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(ca.key.public_key()), critical=False
        )
        .sign(ca.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def signed_notification(
    key: rsa.RSAPrivateKey, cert_url: str, topic_arn: str, message: str, sent: datetime | None = None
) -> dict[str, Any]:
    """A Notification as SNS signs it (SignatureVersion 2), string-to-sign built here, not by the broker."""
    when = sent or datetime.now(UTC)
    body = {
        "Type": "Notification",
        "MessageId": f"m-{when.timestamp()}",
        "TopicArn": topic_arn,
        "Message": message,
        "Timestamp": when.strftime("%Y-%m-%dT%H:%M:%S.000Z"),
    }
    text = "".join(f"{name}\n{body[name]}\n" for name in NOTIFICATION_FIELDS if name in body)
    signature = key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
    return {
        **body,
        "SignatureVersion": "2",
        "Signature": base64.b64encode(signature).decode(),
        "SigningCertURL": cert_url,
    }


@dataclass
class CertHost:
    """A loopback HTTP server standing in for the SNS host: serves `files`, 404 (or `statuses`) otherwise;
    records hits per path and each request's Authorization header."""

    url: str = ""
    files: dict[str, bytes] = field(default_factory=dict)
    hits: Counter[str] = field(default_factory=Counter)
    authorizations: list[str | None] = field(default_factory=list)  # each request's Authorization header
    statuses: dict[str, int] = field(default_factory=dict)  # a status to answer instead of 404


@contextmanager
def cert_host() -> Iterator[CertHost]:
    state = CertHost()

    class Handler(BaseHTTPRequestHandler):
        def do_GET(self) -> None:
            state.hits[self.path] += 1
            state.authorizations.append(self.headers.get("Authorization"))
            body = state.files.get(self.path)
            self.send_response(200 if body is not None else state.statuses.get(self.path, 404))
            self.send_header("Content-Length", str(len(body or b"")))
            self.end_headers()
            self.wfile.write(body or b"")

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    try:
        yield state
    finally:
        httpd.shutdown()
        httpd.server_close()
        thread.join()
