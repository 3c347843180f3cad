"""SnsVerifier against messages signed here, with certificates served by a loopback HTTP server.

The string-to-sign is rebuilt independently in `_sign` (not imported from the module under test), so a wrong
field list in the verifier cannot agree with itself. Certificates come from a CA made here (a root and a leaf
issued to sns.amazonaws.com), trusted through `SnsTrust.ca_bundle`, so the chain is verified as in production.
"""

from __future__ import annotations

import base64
import socket
import time
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID

from app.events import sns
from app.events.sns import CERT_CACHE_SIZE, SnsRejectCode, SnsRejected, SnsTrust, SnsVerifier
from tests.sns_certs import CertAuthority, CertHost, cert_host, make_ca

SNS_HOST = "sns.us-east-1.amazonaws.com"
CERT_PATH = "/SimpleNotificationService-unit.pem"
CERT_URL = f"https://{SNS_HOST}{CERT_PATH}"
TOPIC = "arn:aws:sns:us-east-1:123456789012:uploads"
SUBSCRIBE_PATH = "/"
SUBSCRIBE_QUERY = f"Action=ConfirmSubscription&TopicArn={TOPIC}&Token=tok"

NOTIFICATION_FIELDS = ("Message", "MessageId", "Subject", "Timestamp", "TopicArn", "Type")
CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")
DIGESTS = {"1": hashes.SHA1, "2": hashes.SHA256}


@pytest.fixture(scope="module")
def _running_server() -> Iterator[CertHost]:
    """One loopback server per module: `shutdown` waits out a 0.5 s poll, too slow to pay per test."""
    with cert_host() as host:
        yield host


@pytest.fixture
def server(_running_server: CertHost) -> CertHost:
    """The module's server with its files and records emptied for this test."""
    records = (
        _running_server.files,
        _running_server.hits,
        _running_server.authorizations,
        _running_server.statuses,
    )
    for record in records:
        record.clear()
    return _running_server


@pytest.fixture(scope="module")
def key() -> rsa.RSAPrivateKey:
    return rsa.generate_private_key(public_exponent=65537, key_size=2048)


@pytest.fixture(scope="module")
def ca(tmp_path_factory: pytest.TempPathFactory) -> CertAuthority:
    return make_ca(tmp_path_factory.mktemp("ca"))


def _cert_pem(
    key: rsa.RSAPrivateKey,
    not_before: timedelta,
    not_after: timedelta,
    issuer: CertAuthority | None = None,
    name: str = "sns.amazonaws.com",
) -> bytes:
    """A leaf for `name`, valid from now+not_before to now+not_after, issued by `issuer` (None: signed by its
    own key under Amazon's issuer name, as moto's are)."""
    now = datetime.now(UTC)
    subject = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, name)])
    builder = (
        x509.CertificateBuilder()
        .subject_name(subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + not_before)
        .not_valid_after(now + not_after)
    )
    if issuer is None:
        amazon = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Amazon RSA 2048 M01")])
        return builder.issuer_name(amazon).sign(key, hashes.SHA256()).public_bytes(serialization.Encoding.PEM)
    cert = (
        builder.issuer_name(issuer.cert.subject)
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(name)]), critical=False)
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.ExtendedKeyUsage([x509.oid.ExtendedKeyUsageOID.SERVER_AUTH]), critical=False)
        .add_extension(
            x509.AuthorityKeyIdentifier.from_issuer_public_key(issuer.key.public_key()), critical=False
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(issuer.key, hashes.SHA256())
    )
    return cert.public_bytes(serialization.Encoding.PEM)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


@pytest.fixture
def session() -> Iterator[requests.Session]:
    with requests.Session() as s:
        yield s


@pytest.fixture
def verifier(
    server: CertHost, key: rsa.RSAPrivateKey, session: requests.Session, ca: CertAuthority
) -> SnsVerifier:
    server.files[CERT_PATH] = _cert_pem(key, timedelta(days=-1), timedelta(days=30), ca)
    trust = SnsTrust(
        cert_hosts=(SNS_HOST,), topic_arns=(TOPIC,), cert_endpoint_url=server.url, ca_bundle=ca.bundle
    )
    return SnsVerifier(trust, session=session, timeout=2.0)


def _sign(key: rsa.RSAPrivateKey, body: dict[str, Any], version: str = "2") -> dict[str, Any]:
    names = NOTIFICATION_FIELDS if body["Type"] == "Notification" else CONFIRMATION_FIELDS
    text = "".join(f"{name}\n{body[name]}\n" for name in names if name in body)
    signature = key.sign(text.encode(), padding.PKCS1v15(), DIGESTS[version]())
    return {
        **body,
        "SignatureVersion": version,
        "Signature": base64.b64encode(signature).decode(),
        "SigningCertURL": CERT_URL,
    }


def _notification(key: rsa.RSAPrivateKey, version: str = "2", **extra: str) -> dict[str, Any]:
    body = {
        "Type": "Notification",
        "MessageId": "6d8fbc0d-a27e-4049-9181-11e6e8295a3b",
        "TopicArn": TOPIC,
        "Message": '{"Records": [{"s3": {"object": {"key": "temp%2Fa+b.jpg"}}}]}\nsecond line',
        "Timestamp": _now(),
        "UnsubscribeURL": f"https://{SNS_HOST}/?Action=Unsubscribe",
        **extra,
    }
    return _sign(key, body, version)


def _confirmation(key: rsa.RSAPrivateKey, server: CertHost, kind: str = "SubscriptionConfirmation") -> dict:
    body = {
        "Type": kind,
        "MessageId": "165545c9-2a5c-472c-8df2-7ff2be2b3b1b",
        "Token": "tok",
        "TopicArn": TOPIC,
        "Message": f"You have chosen to subscribe to the topic {TOPIC}.",
        "SubscribeURL": f"https://{SNS_HOST}{SUBSCRIBE_PATH}?{SUBSCRIBE_QUERY}",
        "Timestamp": _now(),
    }
    server.files[f"{SUBSCRIBE_PATH}?{SUBSCRIBE_QUERY}"] = b"<ConfirmSubscriptionResponse/>"
    return _sign(key, body)


def _rejected(verifier: SnsVerifier, message: dict[str, Any]) -> SnsRejectCode:
    with pytest.raises(SnsRejected) as caught:
        verifier.verify(message)
    return caught.value.code


@pytest.mark.parametrize("version", ["1", "2"])
def test_signed_notification_passes(verifier: SnsVerifier, key: rsa.RSAPrivateKey, version: str) -> None:
    verifier.verify(_notification(key, version))
    verifier.verify(_notification(key, version, Subject="Amazon S3 Notification"))


@pytest.mark.parametrize("kind", ["SubscriptionConfirmation", "UnsubscribeConfirmation"])
def test_signed_confirmation_passes(verifier, key, server: CertHost, kind: str) -> None:
    verifier.verify(_confirmation(key, server, kind))


def test_cert_fetched_from_local_endpoint_with_sns_scoped_authorization(verifier, key, server) -> None:
    verifier.verify(_notification(key))
    assert server.hits[CERT_PATH] == 1
    assert "/us-east-1/sns/aws4_request" in (server.authorizations[0] or "")


def test_certificate_is_cached(verifier, key, server) -> None:
    for index in range(20):
        verifier.verify(_notification(key, MessageId=f"m-{index}"))
    assert server.hits[CERT_PATH] == 1


def test_cache_is_bounded(verifier, key, server) -> None:
    paths = [f"/SimpleNotificationService-{index}.pem" for index in range(CERT_CACHE_SIZE + 1)]
    for path in paths:
        server.files[path] = server.files[CERT_PATH]
        verifier.verify({**_notification(key), "SigningCertURL": f"https://{SNS_HOST}{path}"})
    verifier.verify({**_notification(key), "SigningCertURL": f"https://{SNS_HOST}{paths[0]}"})
    assert server.hits[paths[0]] == 2  # evicted as least recently used, so fetched again
    assert server.hits[paths[-1]] == 1


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("Message", "tampered"),
        ("MessageId", "other"),
        ("Timestamp", (datetime.now(UTC) - timedelta(minutes=1)).isoformat()),
        ("Subject", "added after signing"),
        ("SignatureVersion", "1"),  # a v2 signature checked as v1
    ],
)
def test_tampered_field_rejected(verifier, key, name: str, value: str) -> None:
    assert _rejected(verifier, {**_notification(key), name: value}) == SnsRejectCode.INVALID_SIGNATURE


def test_forged_signature_rejected(verifier) -> None:
    other_key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    assert _rejected(verifier, _notification(other_key)) == SnsRejectCode.INVALID_SIGNATURE


def test_garbage_signature_rejected(verifier, key) -> None:
    message = {**_notification(key), "Signature": "not base64!"}
    assert _rejected(verifier, message) == SnsRejectCode.INVALID_SIGNATURE


@pytest.mark.parametrize("version", ["0", "3", "", "2.0"])
def test_unknown_signature_version_rejected(verifier, key, server, version: str) -> None:
    message = {**_notification(key), "SignatureVersion": version}
    assert _rejected(verifier, message) == SnsRejectCode.INVALID_SIGNATURE
    assert server.hits[CERT_PATH] == 0


@pytest.mark.parametrize(
    "cert_url",
    [
        f"https://{SNS_HOST}.evil.com{CERT_PATH}",
        f"https://evil{SNS_HOST}{CERT_PATH}",
        f"https://{SNS_HOST}@evil.com{CERT_PATH}",
        f"https://evil.com@{SNS_HOST}{CERT_PATH}",
        f"https://{SNS_HOST}:8443{CERT_PATH}",
        f"https://{SNS_HOST}:443{CERT_PATH}",
        f"https://sns.us-east-2.amazonaws.com{CERT_PATH}",
        f"https://evil.com{CERT_PATH}",
        f"http://{SNS_HOST}{CERT_PATH}",
        f"//{SNS_HOST}{CERT_PATH}",
        f"https://{SNS_HOST}/cert.txt",
        f"https://{SNS_HOST}{CERT_PATH}?x=1",
        f"https://{SNS_HOST}#@evil.com{CERT_PATH}",
    ],
)
def test_untrusted_cert_url_rejected_without_fetch(verifier, key, server, cert_url: str) -> None:
    message = {**_notification(key), "SigningCertURL": cert_url}
    assert _rejected(verifier, message) == SnsRejectCode.UNTRUSTED_CERT_HOST
    assert sum(server.hits.values()) == 0


def test_allowlist_is_case_insensitive(verifier, key) -> None:
    verifier.verify(
        {**_notification(key), "SigningCertURL": f"https://SNS.us-east-1.amazonaws.com{CERT_PATH}"}
    )


def test_unknown_topic_rejected(verifier, key, server) -> None:
    message = _sign(key, {**_notification(key), "TopicArn": f"{TOPIC}-other"})
    assert _rejected(verifier, message) == SnsRejectCode.UNKNOWN_TOPIC
    assert server.hits[CERT_PATH] == 0


def test_any_topic_when_none_configured(server, key, session, ca) -> None:
    server.files[CERT_PATH] = _cert_pem(key, timedelta(days=-1), timedelta(days=1), ca)
    trust = SnsTrust(cert_hosts=(SNS_HOST,), cert_endpoint_url=server.url, ca_bundle=ca.bundle)
    SnsVerifier(trust, session=session).verify(_sign(key, {**_notification(key), "TopicArn": "arn:x"}))


@pytest.mark.parametrize(
    "name", ["Type", "Message", "MessageId", "Timestamp", "TopicArn", "Signature", "SignatureVersion"]
)
def test_missing_field_rejected(verifier, key, name: str) -> None:
    message = _notification(key)
    del message[name]
    assert _rejected(verifier, message) == SnsRejectCode.INVALID_SNS_MESSAGE


@pytest.mark.parametrize("name", ["SubscribeURL", "Token"])
def test_confirmation_missing_field_rejected(verifier, key, server, name: str) -> None:
    message = _confirmation(key, server)
    del message[name]
    assert _rejected(verifier, message) == SnsRejectCode.INVALID_SNS_MESSAGE


def test_missing_cert_url_and_bad_shapes_rejected(verifier, key) -> None:
    message = _notification(key)
    del message["SigningCertURL"]
    assert _rejected(verifier, message) == SnsRejectCode.INVALID_SNS_MESSAGE
    assert _rejected(verifier, {**_notification(key), "Type": "Other"}) == SnsRejectCode.INVALID_SNS_MESSAGE
    assert _rejected(verifier, {**_notification(key), "Message": 7}) == SnsRejectCode.INVALID_SNS_MESSAGE


@pytest.mark.parametrize(
    ("not_before", "not_after"),
    [(timedelta(days=-30), timedelta(days=-1)), (timedelta(days=1), timedelta(days=30))],
    ids=["expired", "not-yet-valid"],
)
def test_cert_outside_validity_rejected(verifier, key, server, ca, not_before, not_after) -> None:
    server.files[CERT_PATH] = _cert_pem(key, not_before, not_after, ca)
    # The chain check refuses it first (validity is part of the path); a cached one expiring is caught per use.
    assert _rejected(verifier, _notification(key)) in (
        SnsRejectCode.UNTRUSTED_CERT,
        SnsRejectCode.INVALID_SIGNATURE,
    )


def test_a_certificate_the_host_does_not_have_is_refused_once_and_remembered(verifier, key, server) -> None:
    server.files.pop(CERT_PATH)
    for index in range(10):
        message = _notification(key, MessageId=f"forged-{index}")
        assert _rejected(verifier, message) == SnsRejectCode.CERT_NOT_FOUND
    assert server.hits[CERT_PATH] == 1


def test_a_body_that_is_no_certificate_is_untrusted_and_remembered(verifier, key, server) -> None:
    server.files[CERT_PATH] = b"not a certificate"
    for _ in range(3):
        assert _rejected(verifier, _notification(key)) == SnsRejectCode.UNTRUSTED_CERT
    assert server.hits[CERT_PATH] == 1


def test_remembered_refusals_expire(verifier, key, server, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sns, "BAD_CERT_TTL_SECONDS", 0.0)
    server.files.pop(CERT_PATH)
    assert _rejected(verifier, _notification(key)) == SnsRejectCode.CERT_NOT_FOUND
    assert _rejected(verifier, _notification(key)) == SnsRejectCode.CERT_NOT_FOUND
    assert server.hits[CERT_PATH] == 2


def test_a_host_error_is_unavailable_and_remembered_only_briefly(
    verifier, key, server, monkeypatch: pytest.MonkeyPatch
) -> None:
    server.files.pop(CERT_PATH)
    server.statuses[CERT_PATH] = 503
    assert _rejected(verifier, _notification(key)) == SnsRejectCode.CERT_UNAVAILABLE
    assert _rejected(verifier, _notification(key)) == SnsRejectCode.CERT_UNAVAILABLE
    assert server.hits[CERT_PATH] == 1  # within UNAVAILABLE_CERT_TTL_SECONDS: not fetched again
    later = time.monotonic() + sns.UNAVAILABLE_CERT_TTL_SECONDS + 1
    monkeypatch.setattr(sns.time, "monotonic", lambda: later)
    assert _rejected(verifier, _notification(key)) == SnsRejectCode.CERT_UNAVAILABLE
    assert server.hits[CERT_PATH] == 2  # SNS's retry 20 s later finds the certificate fetched again


def test_a_certificate_from_another_ca_is_untrusted(verifier, key, server, tmp_path: Path) -> None:
    other = make_ca(tmp_path, "Someone Else's CA")
    server.files[CERT_PATH] = _cert_pem(key, timedelta(days=-1), timedelta(days=30), other)
    assert _rejected(verifier, _notification(key)) == SnsRejectCode.UNTRUSTED_CERT


def test_a_certificate_for_another_name_is_untrusted(verifier, key, server, ca) -> None:
    server.files[CERT_PATH] = _cert_pem(key, timedelta(days=-1), timedelta(days=30), ca, name="evil.example")
    assert _rejected(verifier, _notification(key)) == SnsRejectCode.UNTRUSTED_CERT


def test_a_self_signed_certificate_is_untrusted_even_from_the_trusted_host(verifier, key, server) -> None:
    server.files[CERT_PATH] = _cert_pem(key, timedelta(days=-1), timedelta(days=30))
    assert _rejected(verifier, _notification(key)) == SnsRejectCode.UNTRUSTED_CERT


def test_the_local_endpoint_is_the_anchor_when_no_bundle_is_set(server, key, session) -> None:
    """moto's certificates (own key, Amazon's issuer name, no chain) verify only through the configured local
    SNS that served them; their subject, validity and the signature are still checked."""
    server.files[CERT_PATH] = _cert_pem(key, timedelta(days=-1), timedelta(days=30))
    trust = SnsTrust(cert_hosts=(SNS_HOST,), topic_arns=(TOPIC,), cert_endpoint_url=server.url)
    local = SnsVerifier(trust, session=session, timeout=2.0)
    local.verify(_notification(key))
    other_name = "/SimpleNotificationService-other.pem"
    server.files[other_name] = _cert_pem(key, timedelta(days=-1), timedelta(days=30), name="evil.example")
    message = {**_notification(key), "SigningCertURL": f"https://{SNS_HOST}{other_name}"}
    assert _rejected(local, message) == SnsRejectCode.UNTRUSTED_CERT


@pytest.mark.parametrize(
    "sent",
    [timedelta(hours=-1, minutes=-1), timedelta(days=-400), timedelta(minutes=20)],
    ids=["an-hour-old", "a-year-old", "from-the-future"],
)
def test_replayed_messages_are_stale_without_a_fetch(verifier, key, server, sent: timedelta) -> None:
    message = _notification(key, Timestamp=(datetime.now(UTC) + sent).strftime("%Y-%m-%dT%H:%M:%S.000Z"))
    assert _rejected(verifier, message) == SnsRejectCode.STALE_MESSAGE
    assert server.hits[CERT_PATH] == 0


def test_a_message_within_the_hour_passes(verifier, key) -> None:
    sent = datetime.now(UTC) - timedelta(minutes=59)
    verifier.verify(_notification(key, Timestamp=sent.strftime("%Y-%m-%dT%H:%M:%S.000Z")))


@pytest.mark.parametrize("timestamp", ["yesterday", "2026-01-02T03:04:05"], ids=["garbage", "no-zone"])
def test_a_timestamp_that_is_not_one_is_invalid(verifier, key, timestamp: str) -> None:
    assert _rejected(verifier, _notification(key, Timestamp=timestamp)) == SnsRejectCode.INVALID_SNS_MESSAGE


def test_unreachable_cert_is_unavailable(key, session) -> None:
    with socket.socket() as bound_not_listening:  # holds a loopback port that refuses connections
        bound_not_listening.bind(("127.0.0.1", 0))
        endpoint = f"http://127.0.0.1:{bound_not_listening.getsockname()[1]}"
        trust = SnsTrust(cert_hosts=(SNS_HOST,), cert_endpoint_url=endpoint)
        verifier = SnsVerifier(trust, session=session, timeout=1.0)
        assert _rejected(verifier, _notification(key)) == SnsRejectCode.CERT_UNAVAILABLE


class _RecordingSession(requests.Session):
    """Stands in for the network when no local endpoint is configured: records the URL and headers."""

    def __init__(self, pem: bytes) -> None:
        super().__init__()
        self.pem = pem
        self.calls: list[tuple[str, dict[str, str]]] = []

    def get(self, url: str | bytes, **kwargs: Any) -> requests.Response:  # type: ignore[override]
        self.calls.append((str(url), kwargs["headers"]))
        response = requests.Response()
        response.status_code = 200
        response._content = self.pem
        response._content_consumed = True
        return response


def test_without_local_endpoint_fetches_the_checked_url_plainly(key, ca) -> None:
    with _RecordingSession(_cert_pem(key, timedelta(days=-1), timedelta(days=1), ca)) as session:
        trust = SnsTrust(cert_hosts=(SNS_HOST,), ca_bundle=ca.bundle)
        SnsVerifier(trust, session=session).verify(_notification(key))
    assert session.calls == [(CERT_URL, {})]


def test_the_default_trust_store_is_the_systems(key, ca) -> None:
    """Without a bundle and without the local endpoint, the system's roots decide: the test CA is not one."""
    with _RecordingSession(_cert_pem(key, timedelta(days=-1), timedelta(days=1), ca)) as session:
        verifier = SnsVerifier(SnsTrust(cert_hosts=(SNS_HOST,)), session=session)
        assert _rejected(verifier, _notification(key)) == SnsRejectCode.UNTRUSTED_CERT
    sns.trust_store(None)  # the system bundle loads (roots from OpenSSL's default CA file)


def test_confirm_subscription_visits_mapped_subscribe_url(verifier, key, server) -> None:
    verifier.confirm_subscription(_confirmation(key, server))
    assert server.hits[f"{SUBSCRIBE_PATH}?{SUBSCRIBE_QUERY}"] == 1
    assert all("/sns/aws4_request" in (auth or "") for auth in server.authorizations)


def test_confirm_subscription_refuses_untrusted_subscribe_url(verifier, key, server) -> None:
    body = {**_confirmation(key, server), "SubscribeURL": f"https://evil.com/?{SUBSCRIBE_QUERY}"}
    with pytest.raises(SnsRejected) as caught:
        verifier.confirm_subscription(_sign(key, body))
    assert caught.value.code == SnsRejectCode.UNTRUSTED_CERT_HOST
    assert server.hits[f"{SUBSCRIBE_PATH}?{SUBSCRIBE_QUERY}"] == 0


def test_confirm_subscription_requires_a_valid_confirmation(verifier, key, server) -> None:
    tampered = {**_confirmation(key, server), "SubscribeURL": f"https://{SNS_HOST}/?Action=Other"}
    for message, code in [
        (tampered, SnsRejectCode.INVALID_SIGNATURE),
        (_notification(key), SnsRejectCode.INVALID_SNS_MESSAGE),
    ]:
        with pytest.raises(SnsRejected) as caught:
            verifier.confirm_subscription(message)
        assert caught.value.code == code
    assert server.hits[f"{SUBSCRIBE_PATH}?{SUBSCRIBE_QUERY}"] == 0


def test_confirm_subscription_reports_refusal(verifier, key, server) -> None:
    message = _confirmation(key, server)
    server.files.pop(f"{SUBSCRIBE_PATH}?{SUBSCRIBE_QUERY}")
    with pytest.raises(SnsRejected) as caught:
        verifier.confirm_subscription(message)
    assert caught.value.code == SnsRejectCode.CONFIRMATION_FAILED
