"""SnsVerifier against what a real moto server (5.2.5, server mode) delivers over HTTP.

Findings pinned here, because the webhook and the dev stack rely on them:
- moto signs deliveries for real (SignatureVersion 2) and serves the certificate itself, behind an
  SNS-scoped Authorization header (without it, S3 answers);
- HTTP subscriptions are confirmed at once: no SubscriptionConfirmation is POSTed;
- a delivery carries only `Content-Type: text/plain; charset=UTF-8`, none of the `x-amz-sns-*` headers;
- moto leaves `Subject` out of the string it signs, so a message published with a Subject fails a correct
  verifier (S3 notifications carry no Subject, so the dev stack is unaffected).
"""

from __future__ import annotations

import base64
import json
import threading
from collections import defaultdict
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from uuid import uuid4

import boto3
import pytest
import requests
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import padding, rsa
from cryptography.x509.oid import NameOID
from moto.core import DEFAULT_ACCOUNT_ID
from moto.server import ThreadedMotoServer
from moto.sns import sns_backends

from app.events.sns import SnsRejectCode, SnsRejected, SnsTrust, SnsVerifier

REGION = "us-east-1"
SNS_HOST = f"sns.{REGION}.amazonaws.com"
CONFIRMATION_FIELDS = ("Message", "MessageId", "SubscribeURL", "Timestamp", "Token", "TopicArn", "Type")


@dataclass
class Delivery:
    headers: dict[str, str]
    body: dict[str, Any]


@dataclass
class Receiver:
    """A loopback HTTP endpoint that records what is POSTed to each path."""

    url: str = ""
    deliveries: dict[str, list[Delivery]] = field(default_factory=lambda: defaultdict(list))


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=0, verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def receiver() -> Iterator[Receiver]:
    state = Receiver()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            body = self.rfile.read(int(self.headers.get("Content-Length", "0")))
            state.deliveries[self.path].append(Delivery(dict(self.headers), json.loads(body)))
            self.send_response(200)
            self.send_header("Content-Length", "0")
            self.end_headers()

        def log_message(self, format: str, *args: Any) -> None:
            pass

    httpd = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    thread = threading.Thread(target=httpd.serve_forever, daemon=True)
    thread.start()
    state.url = f"http://127.0.0.1:{httpd.server_address[1]}"
    yield state
    httpd.shutdown()
    httpd.server_close()
    thread.join()


def _client(service: str, moto_url: str) -> Any:
    return boto3.client(
        service,
        endpoint_url=moto_url,
        region_name=REGION,
        aws_access_key_id="testing",
        aws_secret_access_key="testing",
    )


@dataclass
class Topic:
    arn: str
    subscription_arn: str
    path: str  # the receiver path this topic delivers to


@pytest.fixture
def topic(moto_url: str, receiver: Receiver) -> Topic:
    """A fresh topic with an HTTP subscription to its own receiver path, so tests cannot see each other."""
    sns = _client("sns", moto_url)
    name = f"uploads-{uuid4().hex[:8]}"
    arn = sns.create_topic(Name=name)["TopicArn"]
    path = f"/{name}"
    subscription = sns.subscribe(
        TopicArn=arn, Protocol="http", Endpoint=f"{receiver.url}{path}", ReturnSubscriptionArn=True
    )
    return Topic(arn, subscription["SubscriptionArn"], path)


@pytest.fixture
def verifier(moto_url: str, topic: Topic) -> Iterator[SnsVerifier]:
    trust = SnsTrust(cert_hosts=(SNS_HOST,), topic_arns=(topic.arn,), cert_endpoint_url=moto_url)
    with requests.Session() as session:
        yield SnsVerifier(trust, session=session, timeout=5.0)


def _rejected(call: Any, message: dict[str, Any]) -> SnsRejectCode:
    with pytest.raises(SnsRejected) as caught:
        call(message)
    return caught.value.code


def test_subscribing_posts_no_confirmation(moto_url: str, receiver: Receiver, topic: Topic) -> None:
    attributes = _client("sns", moto_url).get_subscription_attributes(SubscriptionArn=topic.subscription_arn)
    assert attributes["Attributes"]["PendingConfirmation"] == "false"
    assert receiver.deliveries[topic.path] == []


def test_published_message_verifies_and_tampering_fails(
    moto_url: str, receiver: Receiver, topic: Topic, verifier: SnsVerifier
) -> None:
    _client("sns", moto_url).publish(TopicArn=topic.arn, Message="line one\nline two")
    (delivery,) = receiver.deliveries[topic.path]  # moto POSTs synchronously inside Publish
    message = delivery.body
    assert message["SignatureVersion"] == "2"
    assert message["SigningCertURL"].startswith(f"https://{SNS_HOST}/SimpleNotificationService-")
    verifier.verify(message)
    assert _rejected(verifier.verify, {**message, "Message": "line one"}) == SnsRejectCode.INVALID_SIGNATURE


def test_delivery_headers_carry_no_sns_message_type(moto_url: str, receiver: Receiver, topic: Topic) -> None:
    _client("sns", moto_url).publish(TopicArn=topic.arn, Message="hello")
    headers = {name.lower(): value for name, value in receiver.deliveries[topic.path][0].headers.items()}
    assert headers["content-type"] == "text/plain; charset=UTF-8"
    assert not [name for name in headers if name.startswith("x-amz-sns")]


def test_moto_does_not_sign_the_subject(
    moto_url: str, receiver: Receiver, topic: Topic, verifier: SnsVerifier
) -> None:
    _client("sns", moto_url).publish(TopicArn=topic.arn, Message="hello", Subject="subject")
    message = receiver.deliveries[topic.path][0].body
    assert _rejected(verifier.verify, message) == SnsRejectCode.INVALID_SIGNATURE
    verifier.verify({name: value for name, value in message.items() if name != "Subject"})


def test_s3_event_via_sns_verifies(
    moto_url: str, receiver: Receiver, topic: Topic, verifier: SnsVerifier
) -> None:
    s3 = _client("s3", moto_url)
    bucket = f"media-{uuid4().hex[:8]}"
    s3.create_bucket(Bucket=bucket)
    s3.put_bucket_notification_configuration(
        Bucket=bucket,
        NotificationConfiguration={
            "TopicConfigurations": [{"TopicArn": topic.arn, "Events": ["s3:ObjectCreated:*"]}]
        },
    )
    s3.put_object(Bucket=bucket, Key="temp/a b.jpg", Body=b"x")
    test_event, created = (delivery.body for delivery in receiver.deliveries[topic.path])
    for message in (test_event, created):
        assert "Subject" not in message
        verifier.verify(message)
    assert json.loads(test_event["Message"])["Event"] == "s3:TestEvent"
    record = json.loads(created["Message"])["Records"][0]
    assert record["eventName"] == "ObjectCreated:Put"
    assert record["s3"]["object"]["key"] == "temp%2Fa+b.jpg"


def test_other_topic_is_unknown(moto_url: str, receiver: Receiver, topic: Topic) -> None:
    _client("sns", moto_url).publish(TopicArn=topic.arn, Message="hello")
    trust = SnsTrust(
        cert_hosts=(SNS_HOST,), topic_arns=("arn:aws:sns:us-east-1:1:x",), cert_endpoint_url=moto_url
    )
    with requests.Session() as session:
        verifier = SnsVerifier(trust, session=session)
        assert (
            _rejected(verifier.verify, receiver.deliveries[topic.path][0].body) == SnsRejectCode.UNKNOWN_TOPIC
        )


def _install_signing_cert(key: rsa.RSAPrivateKey) -> str:
    """Put a certificate where moto serves its own, and return its SigningCertURL.

    moto never POSTs a SubscriptionConfirmation, so one is signed here. The in-process server shares moto's
    backends, so the certificate is placed in the same (internal) store moto uses for its signing
    certificates; the fetch, the SubscribeURL GET and moto's ConfirmSubscription handler are all real.
    """
    now = datetime.now(UTC)
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "sns.amazonaws.com")])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(minutes=5))
        .not_valid_after(now + timedelta(days=1))
        .sign(key, hashes.SHA256())
    )
    key_name = f"SimpleNotificationService-{uuid4().hex}.pem"
    store = sns_backends[DEFAULT_ACCOUNT_ID][REGION]._message_public_keys
    store[key_name] = cert.public_bytes(serialization.Encoding.PEM)
    return f"https://{SNS_HOST}/{key_name}"


def _signed_confirmation(topic_arn: str, subscribe_topic_arn: str) -> dict[str, Any]:
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    body = {
        "Type": "SubscriptionConfirmation",
        "MessageId": str(uuid4()),
        "Token": "token",
        "TopicArn": topic_arn,
        "Message": f"You have chosen to subscribe to the topic {topic_arn}.",
        "SubscribeURL": f"https://{SNS_HOST}/?Action=ConfirmSubscription&TopicArn={subscribe_topic_arn}&Token=token",
        "Timestamp": datetime.now(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z"),
    }
    text = "".join(f"{name}\n{body[name]}\n" for name in CONFIRMATION_FIELDS)
    signature = key.sign(text.encode(), padding.PKCS1v15(), hashes.SHA256())
    return {
        **body,
        "SignatureVersion": "2",
        "Signature": base64.b64encode(signature).decode(),
        "SigningCertURL": _install_signing_cert(key),
    }


def test_confirm_subscription_reaches_moto_confirm_subscription(topic: Topic, verifier: SnsVerifier) -> None:
    verifier.confirm_subscription(_signed_confirmation(topic.arn, topic.arn))
    unknown = f"{topic.arn}-missing"  # moto answers 404 "Topic does not exist": the GET reached SNS, not S3
    message = _signed_confirmation(topic.arn, unknown)
    assert _rejected(verifier.confirm_subscription, message) == SnsRejectCode.CONFIRMATION_FAILED


def test_a_moto_delivery_does_not_chain_to_a_trust_store(
    moto_url: str, receiver: Receiver, topic: Topic, tmp_path: Path
) -> None:
    """With a trust store configured, the chain is checked even through the local endpoint: moto's
    certificates (signed by their own key under Amazon's issuer name) chain to nothing, so they are refused —
    which is why the dev stack sets no `BROKER_SNS_CA_BUNDLE` and the local endpoint is the anchor."""
    _client("sns", moto_url).publish(TopicArn=topic.arn, Message="hello")
    message = receiver.deliveries[topic.path][0].body
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    root = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "Some Root")])
    now = datetime.now(UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(root)
        .issuer_name(root)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=1))
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .sign(key, hashes.SHA256())
    )
    bundle = tmp_path / "roots.pem"
    bundle.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    trust = SnsTrust(
        cert_hosts=(SNS_HOST,), topic_arns=(topic.arn,), cert_endpoint_url=moto_url, ca_bundle=str(bundle)
    )
    with requests.Session() as session:
        assert _rejected(SnsVerifier(trust, session=session).verify, message) == SnsRejectCode.UNTRUSTED_CERT


def test_a_certificate_moto_never_minted(
    moto_url: str, receiver: Receiver, topic: Topic, verifier: SnsVerifier
) -> None:
    """A forged SigningCertURL on the trusted host, mapped to moto: moto answers 500 (a KeyError) for a name it
    never minted, so locally it is `cert_unavailable` (remembered for a few seconds); the real host answers
    4xx, which is `cert_not_found` (test_webhook.py)."""
    _client("sns", moto_url).publish(TopicArn=topic.arn, Message="hello")
    message = receiver.deliveries[topic.path][0].body
    forged = {**message, "SigningCertURL": f"https://{SNS_HOST}/SimpleNotificationService-{uuid4().hex}.pem"}
    assert {_rejected(verifier.verify, forged) for _ in range(3)} == {SnsRejectCode.CERT_UNAVAILABLE}
