"""Authenticity of the SNS messages POSTed to the event webhook.

Anyone can POST to the webhook; only the signature proves SNS sent the message. The rules are AWS's
("Verifying the signatures of Amazon SNS messages"): rebuild the string-to-sign from a fixed field list per
message type, take the certificate only from an allowlisted host over HTTPS, and check an RSA PKCS#1 v1.5
signature (SHA1 for SignatureVersion 1, SHA256 for 2).

The local stack (moto server) signs for real but serves its certificate itself while naming the real SNS host
in `SigningCertURL`. `SnsTrust.cert_endpoint_url` redirects fetches for allowlisted hosts to that server;
every check still runs. There is deliberately no switch that turns verification off.
"""

from __future__ import annotations

import base64
import binascii
import logging
import threading
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from enum import StrEnum
from itertools import islice
from typing import Any
from urllib.parse import SplitResult, urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa

logger = logging.getLogger(__name__)

NOTIFICATION = "Notification"
SUBSCRIPTION_CONFIRMATION = "SubscriptionConfirmation"
UNSUBSCRIBE_CONFIRMATION = "UnsubscribeConfirmation"

# Fields of the string-to-sign, in the order AWS signs them. Nothing else in the body is covered by the
# signature, so nothing else may be trusted (UnsubscribeURL, MessageAttributes, ...).
_CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
SIGNED_FIELDS: dict[str, tuple[str, ...]] = {
    NOTIFICATION: ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type"),
    SUBSCRIPTION_CONFIRMATION: _CONFIRMATION_FIELDS,
    UNSUBSCRIBE_CONFIRMATION: _CONFIRMATION_FIELDS,
}
OPTIONAL_SIGNED_FIELDS = frozenset({"Subject"})  # signed only when the message carries it

# SignatureVersion -> digest of RSA PKCS#1 v1.5. Anything else is refused, never guessed.
SIGNATURE_DIGESTS: dict[str, type[hashes.HashAlgorithm]] = {"1": hashes.SHA1, "2": hashes.SHA256}

# Real SNS reuses one certificate per region for months; moto mints one per message, so the cache is bounded.
CERT_CACHE_SIZE = 64
# A PEM certificate is ~2 KiB; never buffer an arbitrary body from the network.
MAX_CERT_BYTES = 64 * 1024
_CHUNK_BYTES = 8 * 1024

# The moto server routes a request by the service in its Authorization credential scope; without an SNS
# scope the S3 backend answers (404 NoSuchBucket). Sent only to `cert_endpoint_url`, never to AWS.
_LOCAL_SNS_AUTH = (
    "AWS4-HMAC-SHA256 Credential=x/{date}/{region}/sns/aws4_request, SignedHeaders=host, Signature=0"
)


class SnsRejectCode(StrEnum):
    """Why a message was refused. Only CERT_UNAVAILABLE and CONFIRMATION_FAILED may pass on a retry."""

    INVALID_SNS_MESSAGE = "invalid_sns_message"  # not an SNS message: unknown Type, missing/non-string field
    INVALID_SIGNATURE = "invalid_signature"  # bad version, bad base64, wrong signature, unusable certificate
    UNTRUSTED_CERT_HOST = "untrusted_cert_host"  # SigningCertURL / SubscribeURL outside the allowlist
    UNKNOWN_TOPIC = "unknown_topic"
    CERT_UNAVAILABLE = "cert_unavailable"  # transient: the certificate could not be fetched; SNS may retry
    CONFIRMATION_FAILED = "confirmation_failed"  # the SubscribeURL GET failed or was refused


class SnsRejected(Exception):
    """The message must not be acted on. `code` is stable (callers map it to a status); `message` is prose."""

    def __init__(self, code: SnsRejectCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message


@dataclass(frozen=True)
class SnsTrust:
    """What a message must match to be believed.

    `cert_hosts` is compared to the URL's whole authority, so userinfo, ports and lookalike suffixes fail.
    `topic_arns` empty accepts any topic (dev only). `cert_endpoint_url` (local stack only) is the base URL
    that serves certificates and SubscribeURLs of allowlisted hosts; the URL's path and query are kept.
    """

    cert_hosts: tuple[str, ...]
    topic_arns: tuple[str, ...] = ()
    cert_endpoint_url: str | None = None
    region: str = "us-east-1"


class SnsVerifier:
    """Verifies SNS messages and confirms subscriptions. Thread-safe; share one per process for its cache."""

    def __init__(
        self, trust: SnsTrust, session: requests.Session | None = None, timeout: float = 5.0
    ) -> None:
        self._trust = trust
        self._hosts = frozenset(host.lower() for host in trust.cert_hosts)
        self._session = session or requests.Session()
        self._timeout = timeout
        self._certs: OrderedDict[str, x509.Certificate] = OrderedDict()
        self._lock = threading.Lock()

    def verify(self, message: Mapping[str, Any]) -> None:
        """Return only if SNS signed exactly these fields for an allowed topic; else raise SnsRejected.

        Cheap checks run first so a forged message costs no network round trip.
        """
        string_to_sign = _string_to_sign(message)
        digest = _digest(message)
        signature = _signature(message)
        self._check_topic(message)
        cert_url = _text(message, "SigningCertURL")
        parts = self._trusted_parts(cert_url, allow_http=False)
        if not parts.path.endswith(".pem") or parts.query or parts.fragment:
            raise SnsRejected(SnsRejectCode.UNTRUSTED_CERT_HOST, f"not a certificate URL: {cert_url!r}")
        cert = self._certificate(cert_url, self._fetch_url(parts))
        _check_validity(cert)
        _check_signature(cert, signature, string_to_sign, digest)

    def confirm_subscription(self, message: Mapping[str, Any]) -> None:
        """Verify a SubscriptionConfirmation, then visit its SubscribeURL (allowlisted host only).

        https is required unless the URL is mapped to `cert_endpoint_url`, which then decides the transport.
        """
        self.verify(message)
        if message["Type"] != SUBSCRIPTION_CONFIRMATION:
            raise SnsRejected(SnsRejectCode.INVALID_SNS_MESSAGE, f"cannot confirm a {message['Type']}")
        mapped = self._trust.cert_endpoint_url is not None
        parts = self._trusted_parts(_text(message, "SubscribeURL"), allow_http=mapped)
        try:
            with self._get(self._fetch_url(parts)) as response:
                status = response.status_code
        except requests.RequestException as exc:
            raise SnsRejected(SnsRejectCode.CONFIRMATION_FAILED, f"SubscribeURL unreachable: {exc}") from exc
        if status != requests.codes.ok:
            raise SnsRejected(SnsRejectCode.CONFIRMATION_FAILED, f"SubscribeURL answered {status}")
        logger.info("sns subscription confirmed", extra={"topic_arn": message["TopicArn"]})

    def _check_topic(self, message: Mapping[str, Any]) -> None:
        topic = message["TopicArn"]
        if self._trust.topic_arns and topic not in self._trust.topic_arns:
            raise SnsRejected(SnsRejectCode.UNKNOWN_TOPIC, f"topic {topic!r} is not configured")

    def _trusted_parts(self, url: str, *, allow_http: bool) -> SplitResult:
        """Split `url` and insist on the scheme and an exactly allowlisted authority."""
        parts = urlsplit(url)
        schemes = ("https", "http") if allow_http else ("https",)
        if parts.scheme not in schemes:
            raise SnsRejected(SnsRejectCode.UNTRUSTED_CERT_HOST, f"scheme {parts.scheme!r} refused: {url!r}")
        # netloc, not hostname: "host@evil", "host:8443" and "host.evil.com" must all differ from "host".
        if parts.netloc.lower() not in self._hosts:
            raise SnsRejected(SnsRejectCode.UNTRUSTED_CERT_HOST, f"host not allowlisted: {url!r}")
        return parts

    def _fetch_url(self, parts: SplitResult) -> str:
        """The URL actually fetched: the checked one, or its path and query on the local endpoint."""
        base = self._trust.cert_endpoint_url
        if base is None:
            return parts.geturl()
        query = f"?{parts.query}" if parts.query else ""
        return f"{base.rstrip('/')}{parts.path}{query}"

    def _get(self, url: str) -> requests.Response:
        """GET without redirects: a redirect could lead off the allowlist."""
        headers: dict[str, str] = {}
        if self._trust.cert_endpoint_url is not None:
            date = datetime.now(UTC).strftime("%Y%m%d")
            headers["Authorization"] = _LOCAL_SNS_AUTH.format(date=date, region=self._trust.region)
        return self._session.get(
            url, headers=headers, timeout=self._timeout, allow_redirects=False, stream=True
        )

    def _certificate(self, cert_url: str, fetch_url: str) -> x509.Certificate:
        """The certificate for `cert_url`, fetched at most once while it stays in the LRU cache."""
        with self._lock:
            if cert_url in self._certs:
                self._certs.move_to_end(cert_url)
                return self._certs[cert_url]
        try:
            cert = x509.load_pem_x509_certificate(self._download(fetch_url))
        except ValueError as exc:
            raise SnsRejected(SnsRejectCode.CERT_UNAVAILABLE, f"not a PEM certificate: {fetch_url}") from exc
        with self._lock:
            self._certs[cert_url] = cert
            while len(self._certs) > CERT_CACHE_SIZE:
                self._certs.popitem(last=False)
        logger.info("sns signing certificate fetched", extra={"cert_url": cert_url})
        return cert

    def _download(self, url: str) -> bytes:
        """The body, read up to a bound. Any failure is CERT_UNAVAILABLE: it may be transient, SNS retries."""
        try:
            with self._get(url) as response:
                status = response.status_code
                chunks = response.iter_content(_CHUNK_BYTES)
                body = b"".join(islice(chunks, MAX_CERT_BYTES // _CHUNK_BYTES + 1))
        except requests.RequestException as exc:
            raise SnsRejected(SnsRejectCode.CERT_UNAVAILABLE, f"{url} unreachable: {exc}") from exc
        if status != requests.codes.ok or len(body) > MAX_CERT_BYTES:
            raise SnsRejected(SnsRejectCode.CERT_UNAVAILABLE, f"{url} answered {status}, {len(body)} bytes")
        return body


def _text(message: Mapping[str, Any], name: str) -> str:
    value = message.get(name)
    if not isinstance(value, str):
        raise SnsRejected(SnsRejectCode.INVALID_SNS_MESSAGE, f"missing or non-string field {name!r}")
    return value


def _string_to_sign(message: Mapping[str, Any]) -> str:
    """AWS's canonical form: "Name\\nValue\\n" for each signed field of the message's type."""
    kind = message.get("Type")
    if kind not in SIGNED_FIELDS:
        raise SnsRejected(SnsRejectCode.INVALID_SNS_MESSAGE, f"unknown message Type {kind!r}")
    lines = []
    for name in SIGNED_FIELDS[kind]:
        if name in OPTIONAL_SIGNED_FIELDS and message.get(name) is None:
            continue
        lines.append(f"{name}\n{_text(message, name)}\n")
    return "".join(lines)


def _digest(message: Mapping[str, Any]) -> hashes.HashAlgorithm:
    version = _text(message, "SignatureVersion")
    if version not in SIGNATURE_DIGESTS:
        raise SnsRejected(SnsRejectCode.INVALID_SIGNATURE, f"unsupported SignatureVersion {version!r}")
    return SIGNATURE_DIGESTS[version]()


def _signature(message: Mapping[str, Any]) -> bytes:
    try:
        return base64.b64decode(_text(message, "Signature"), validate=True)
    except binascii.Error as exc:
        raise SnsRejected(SnsRejectCode.INVALID_SIGNATURE, "Signature is not base64") from exc


def _check_validity(cert: x509.Certificate) -> None:
    """Checked on every use, not at fetch: a cached certificate can expire."""
    now = datetime.now(UTC)
    if not cert.not_valid_before_utc <= now <= cert.not_valid_after_utc:
        raise SnsRejected(
            SnsRejectCode.INVALID_SIGNATURE,
            f"certificate valid {cert.not_valid_before_utc} to {cert.not_valid_after_utc}, not now",
        )


def _check_signature(
    cert: x509.Certificate, signature: bytes, signed: str, digest: hashes.HashAlgorithm
) -> None:
    key = cert.public_key()
    if not isinstance(key, rsa.RSAPublicKey):
        raise SnsRejected(SnsRejectCode.INVALID_SIGNATURE, "signing certificate has no RSA key")
    try:
        key.verify(signature, signed.encode("utf-8"), padding.PKCS1v15(), digest)
    except InvalidSignature as exc:
        raise SnsRejected(SnsRejectCode.INVALID_SIGNATURE, "signature does not match the message") from exc
