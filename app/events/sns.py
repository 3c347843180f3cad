"""Authenticity of the SNS messages POSTed to the event webhook.

Anyone can POST to the webhook; only the signature proves SNS sent the message. The rules are AWS's
("Verifying the signatures of Amazon SNS messages"): rebuild the string-to-sign from a fixed field list per
message type, take the certificate only from an allowlisted host over HTTPS, and check an RSA PKCS#1 v1.5
signature (SHA1 for SignatureVersion 1, SHA256 for 2). The certificate itself must chain to a trusted root
(the system's trust store, or `SnsTrust.ca_bundle`) and name `sns.amazonaws.com` ("check that the certificate is
issued by Amazon SNS; confirm that its chain of trust is valid"); a message older than an hour is a replay.

Certificates are cached by URL, bounded in count and in time, and so are failures: a forged message naming a
certificate that does not exist costs one fetch per `BAD_CERT_TTL_SECONDS`, not one per request.

The local stack (moto server) signs for real but serves its certificate itself while naming the real SNS host
in `SigningCertURL`. `SnsTrust.cert_endpoint_url` redirects fetches for allowlisted hosts to that server.
moto mints a fresh certificate per message, signed by its own key under an issuer name that is not its subject,
so no trust store can hold its root: with the local endpoint and no `ca_bundle`, the endpoint itself is the
trust anchor (a certificate is believed because the configured local SNS served it). Every other check runs —
signature, subject, validity, age, host, topic. With a `ca_bundle` the chain is verified there too (the tests'
own CA). There is deliberately no switch that turns verification off.
"""

from __future__ import annotations

import base64
import binascii
import logging
import ssl
import threading
import time
from collections import OrderedDict
from collections.abc import Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from functools import cache
from itertools import islice
from pathlib import Path
from typing import Any
from urllib.parse import SplitResult, urlsplit

import requests
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

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

# Real SNS reuses one certificate per region for months; moto mints one per message, so the cache is bounded
# in count and in time. A failure is cached too: a definitive one (the host says 404, the body is no usable
# certificate) for BAD_CERT_TTL_SECONDS, a transient one (unreachable, 5xx) for a few seconds, so SNS's retry
# 20 s later fetches again.
CERT_CACHE_SIZE = 64
GOOD_CERT_TTL_SECONDS = 6 * 3600.0
BAD_CERT_TTL_SECONDS = 600.0
UNAVAILABLE_CERT_TTL_SECONDS = 5.0
# The name an SNS signing certificate is issued to (subject CN and subjectAltName).
SNS_CERT_NAME = "sns.amazonaws.com"
# SNS retries a delivery for at most an hour (the longest delivery policy), so an older message is a replay.
MAX_MESSAGE_AGE = timedelta(hours=1)
MAX_CLOCK_SKEW = timedelta(minutes=15)  # a Timestamp further ahead than this is not one SNS wrote
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
    CERT_NOT_FOUND = "cert_not_found"  # the trusted host has no such certificate (it answered 4xx)
    UNTRUSTED_CERT = "untrusted_cert"  # not a certificate, no chain to a trusted root, or not SNS's subject
    STALE_MESSAGE = "stale_message"  # Timestamp over an hour old (a replay) or far in the future
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
    `ca_bundle`: a PEM file of trusted roots for the certificate's chain; None = the system's trust store
    (or, with `cert_endpoint_url`, the local endpoint itself — see the module's docstring).
    """

    cert_hosts: tuple[str, ...]
    topic_arns: tuple[str, ...] = ()
    cert_endpoint_url: str | None = None
    region: str = "us-east-1"
    ca_bundle: str | None = None

    @property
    def endpoint_is_anchor(self) -> bool:
        return self.cert_endpoint_url is not None and self.ca_bundle is None


@dataclass(frozen=True)
class _Cached:
    expires: float  # time.monotonic()
    chain: tuple[x509.Certificate, ...] | None = None  # the certificate and any intermediates served with it
    refusal: SnsRejected | None = None


class SnsVerifier:
    """Verifies SNS messages and confirms subscriptions. Thread-safe; share one per process for its cache."""

    def __init__(
        self, trust: SnsTrust, session: requests.Session | None = None, timeout: float = 5.0
    ) -> None:
        self._trust = trust
        self._hosts = frozenset(host.lower() for host in trust.cert_hosts)
        self._session = session or requests.Session()
        self._timeout = timeout
        self._certs: OrderedDict[str, _Cached] = OrderedDict()
        self._lock = threading.Lock()
        self._store: Store | None = None

    def verify(self, message: Mapping[str, Any]) -> None:
        """Return only if SNS signed exactly these fields for an allowed topic; else raise SnsRejected.

        Cheap checks run first so a forged message costs no network round trip.
        """
        string_to_sign = _string_to_sign(message)
        digest = _digest(message)
        signature = _signature(message)
        self._check_topic(message)
        _check_age(_text(message, "Timestamp"))
        cert_url = _text(message, "SigningCertURL")
        parts = self._trusted_parts(cert_url, allow_http=False)
        if not parts.path.endswith(".pem") or parts.query or parts.fragment:
            raise SnsRejected(SnsRejectCode.UNTRUSTED_CERT_HOST, f"not a certificate URL: {cert_url!r}")
        chain = self._certificate(cert_url, self._fetch_url(parts))
        _check_validity(chain[0])
        _check_signature(chain[0], signature, string_to_sign, digest)

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

    def _certificate(self, cert_url: str, fetch_url: str) -> tuple[x509.Certificate, ...]:
        """The checked certificate chain for `cert_url` (leaf first), or the cached refusal of it."""
        now = time.monotonic()
        with self._lock:
            cached = self._certs.get(cert_url)
            if cached is not None and cached.expires > now:
                self._certs.move_to_end(cert_url)
                if cached.refusal is not None:
                    raise cached.refusal
                assert cached.chain is not None
                return cached.chain
        try:
            chain = self._checked_chain(self._download(fetch_url), fetch_url)
        except SnsRejected as refusal:
            transient = refusal.code == SnsRejectCode.CERT_UNAVAILABLE
            ttl = UNAVAILABLE_CERT_TTL_SECONDS if transient else BAD_CERT_TTL_SECONDS
            self._remember(cert_url, _Cached(now + ttl, refusal=refusal))
            logger.warning(
                "sns signing certificate refused", extra={"cert_url": cert_url, "code": refusal.code}
            )
            raise
        self._remember(cert_url, _Cached(now + GOOD_CERT_TTL_SECONDS, chain=chain))
        logger.info("sns signing certificate fetched", extra={"cert_url": cert_url})
        return chain

    def _remember(self, cert_url: str, entry: _Cached) -> None:
        with self._lock:
            self._certs[cert_url] = entry
            self._certs.move_to_end(cert_url)
            while len(self._certs) > CERT_CACHE_SIZE:
                self._certs.popitem(last=False)

    def _checked_chain(self, pem: bytes, fetch_url: str) -> tuple[x509.Certificate, ...]:
        """The served PEM as certificates (leaf first, then any intermediates), issued to SNS and, unless the
        local endpoint is the anchor, chaining to a trusted root. Validity in time is checked on every use."""
        try:
            chain = tuple(x509.load_pem_x509_certificates(pem))
        except ValueError as exc:
            raise SnsRejected(SnsRejectCode.UNTRUSTED_CERT, f"not a PEM certificate: {fetch_url}") from exc
        _check_subject(chain[0])
        if not self._trust.endpoint_is_anchor:
            _check_chain(chain, self._trust_store())
        return chain

    def _trust_store(self) -> Store:
        if self._store is None:
            self._store = trust_store(self._trust.ca_bundle)
        return self._store

    def _download(self, url: str) -> bytes:
        """The body, read up to a bound. The host's 4xx is CERT_NOT_FOUND (definitive); anything else that fails
        is CERT_UNAVAILABLE: it may be transient, SNS retries."""
        try:
            with self._get(url) as response:
                status = response.status_code
                chunks = response.iter_content(_CHUNK_BYTES)
                body = b"".join(islice(chunks, MAX_CERT_BYTES // _CHUNK_BYTES + 1))
        except requests.RequestException as exc:
            raise SnsRejected(SnsRejectCode.CERT_UNAVAILABLE, f"{url} unreachable: {exc}") from exc
        if 400 <= status < 500:
            raise SnsRejected(SnsRejectCode.CERT_NOT_FOUND, f"{url} answered {status}: no such certificate")
        if status != requests.codes.ok:
            raise SnsRejected(SnsRejectCode.CERT_UNAVAILABLE, f"{url} answered {status}")
        if len(body) > MAX_CERT_BYTES:
            raise SnsRejected(SnsRejectCode.UNTRUSTED_CERT, f"{url} sent over {MAX_CERT_BYTES} bytes")
        return body


def trust_store(ca_bundle: str | None) -> Store:
    """Roots from `ca_bundle` (a PEM file), or from the system's store (OpenSSL's default CA file)."""
    return Store(_load_roots(ca_bundle or _system_ca_file()))


@cache
def _load_roots(path: str) -> tuple[x509.Certificate, ...]:
    return tuple(x509.load_pem_x509_certificates(Path(path).read_bytes()))


def _system_ca_file() -> str:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).is_file():
            return candidate
    import certifi  # requests' own bundle: the last resort on a machine without a system bundle

    return str(certifi.where())


def _check_subject(cert: x509.Certificate) -> None:
    """Issued to SNS: the subject's common name, or a DNS subjectAltName, is `sns.amazonaws.com`."""
    names = {str(attr.value).lower() for attr in cert.subject.get_attributes_for_oid(NameOID.COMMON_NAME)}
    try:
        alt = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
        names |= {name.lower() for name in alt.get_values_for_type(x509.DNSName)}
    except x509.ExtensionNotFound:
        pass
    if SNS_CERT_NAME not in names:
        raise SnsRejected(
            SnsRejectCode.UNTRUSTED_CERT, f"certificate is not issued to {SNS_CERT_NAME}: {cert.subject}"
        )


def _check_chain(chain: tuple[x509.Certificate, ...], store: Store) -> None:
    """The web PKI's rules (cryptography's verifier): a path to a root in `store`, every certificate valid now,
    the leaf usable for `sns.amazonaws.com`."""
    verifier = (
        PolicyBuilder()
        .store(store)
        .time(datetime.now(UTC))
        .build_server_verifier(x509.DNSName(SNS_CERT_NAME))
    )
    try:
        verifier.verify(chain[0], list(chain[1:]))
    except VerificationError as exc:
        raise SnsRejected(SnsRejectCode.UNTRUSTED_CERT, f"certificate chain not trusted: {exc}") from exc


def _check_age(timestamp: str) -> None:
    """SNS's `Timestamp` (ISO 8601, UTC) within the last hour: older is a replay of a captured message."""
    try:
        sent = datetime.fromisoformat(timestamp.replace("Z", "+00:00"))
    except ValueError:
        raise SnsRejected(
            SnsRejectCode.INVALID_SNS_MESSAGE, f"Timestamp {timestamp!r} is not ISO 8601"
        ) from None
    if sent.tzinfo is None:
        raise SnsRejected(SnsRejectCode.INVALID_SNS_MESSAGE, f"Timestamp {timestamp!r} has no time zone")
    age = datetime.now(UTC) - sent
    if age > MAX_MESSAGE_AGE or age < -MAX_CLOCK_SKEW:
        raise SnsRejected(
            SnsRejectCode.STALE_MESSAGE, f"message sent at {timestamp}, not within the last hour"
        )


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
