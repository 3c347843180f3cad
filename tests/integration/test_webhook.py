"""The webhook: who may report events, what starts work, and what happens when the queue is down."""

from __future__ import annotations

import json
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import ClassVar

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import rsa

from app.devstack.processes import free_port
from tests import images
from tests.sns_certs import CertAuthority, CertHost, cert_host, leaf_pem, make_ca, signed_notification
from tests.support import BrokerClient


def s3_event(bucket: str, key: str, name: str = "ObjectCreated:Post") -> dict:
    return {"Records": [{"eventName": name, "s3": {"bucket": {"name": bucket}, "object": {"key": key}}}]}


def post_sns(api_url: str, message: dict) -> requests.Response:
    """POST an SNS envelope as SNS does (the body is JSON sent as text/plain)."""
    return requests.post(
        f"{api_url}/v1/events/s3",
        data=json.dumps(message),
        headers={"x-amz-sns-message-type": "Notification", "Content-Type": "text/plain"},
        timeout=30,
    )


def post_event(api_url: str, body: dict, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{api_url}/v1/events/s3", json=body, headers=headers, timeout=10)


class Recorder(BaseHTTPRequestHandler):
    received: ClassVar[list[dict]] = []

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers["Content-Length"]))
        Recorder.received.append(json.loads(body))
        self.send_response(200)
        self.end_headers()

    def log_message(self, *args) -> None:
        pass


@pytest.fixture
def signed_sns_message(local_s3, settings):
    """A real notification, signed by the local SNS, captured by a recording subscriber."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), Recorder)
    threading.Thread(target=server.serve_forever, daemon=True).start()
    sns = local_s3.client("sns")
    arn = sns.subscribe(
        TopicArn=settings.sns_topic_arn, Protocol="http", Endpoint=f"http://127.0.0.1:{server.server_port}/"
    )["SubscriptionArn"]
    Recorder.received.clear()
    try:
        sns.publish(
            TopicArn=settings.sns_topic_arn, Message=json.dumps(s3_event(settings.s3_bucket, "elsewhere/x"))
        )
        notifications = [m for m in Recorder.received if m.get("Type") == "Notification"]
        assert notifications, Recorder.received
        yield notifications[-1]
    finally:
        sns.unsubscribe(SubscriptionArn=arn)
        server.shutdown()


def test_genuine_sns_notification_is_accepted(api, signed_sns_message):
    response = post_sns(api.url, signed_sns_message)
    assert response.status_code == 200, response.text
    assert response.json()["outcomes"] == ["ignored"]  # a key outside temp/


def test_forged_sns_signature_is_refused_and_nothing_queued(
    api, alice: BrokerClient, services, settings, signed_sns_message
):
    data = images.jpeg(100, 100)
    ticket = alice.ticket("avatar", "image/jpeg", data)
    forged = dict(signed_sns_message)
    forged["Message"] = json.dumps(s3_event(settings.s3_bucket, f"temp/{ticket['upload_id']}"))
    queued_before = services.queue.count

    response = post_sns(api.url, forged)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "invalid_signature"
    assert services.queue.count == queued_before
    assert alice.status(ticket["upload_id"]).json()["status"] == "pending"


def test_direct_webhook_needs_the_token(api, settings):
    body = s3_event(settings.s3_bucket, "temp/anything")
    assert post_event(api.url, body, None).status_code == 401
    wrong = post_event(api.url, body, "not-the-token")
    assert wrong.status_code == 401
    assert wrong.json()["error"]["code"] == "unauthorized"


@pytest.mark.parametrize(
    ("bucket", "key", "name"),
    [
        ("other-bucket", "temp/{id}", "ObjectCreated:Put"),
        (None, "public/{id}", "ObjectCreated:Put"),
        (None, "temp/{id}", "ObjectRemoved:Delete"),
    ],
)
def test_events_outside_our_scope_are_acknowledged_and_ignored(
    api, alice, settings, services, bucket, key, name
):
    ticket = alice.ticket("avatar", "image/jpeg", images.jpeg(50, 50))
    body = s3_event(bucket or settings.s3_bucket, key.format(id=ticket["upload_id"]), name)

    response = post_event(api.url, body, settings.webhook_token)

    assert response.status_code == 200
    assert response.json()["outcomes"] == ["ignored"]
    assert alice.status(ticket["upload_id"]).json()["status"] == "pending"


def test_s3_test_event_is_acknowledged(api, settings):
    response = post_event(
        api.url, {"Event": "s3:TestEvent", "Bucket": settings.s3_bucket}, settings.webhook_token
    )
    assert response.status_code == 200
    assert response.json()["accepted"] == 0


def test_garbage_body_is_a_clear_400(api, settings):
    response = requests.post(
        f"{api.url}/v1/events/s3",
        data="not json",
        headers={"Authorization": f"Bearer {settings.webhook_token}"},
        timeout=10,
    )
    assert response.status_code == 400
    assert response.json()["error"]["code"] == "invalid_event"


def test_queue_down_answers_503_and_the_retry_queues_the_recorded_upload(api, alice, settings, serve_with):
    ticket = alice.ticket("avatar", "image/jpeg", images.jpeg(50, 50))
    broken = serve_with(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    body = s3_event(settings.s3_bucket, f"temp%2F{ticket['upload_id']}")
    response = post_event(broken.url, body, settings.webhook_token)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "queue_unavailable"
    # The object's arrival is recorded (a retry never finds "nothing to do"); only its job is missing.
    assert alice.status(ticket["upload_id"]).json()["status"] == "uploaded"

    # The sender retries once the queue is back: the upload is queued, not mistaken for a duplicate.
    retried = post_event(api.url, body, settings.webhook_token)
    assert retried.json()["outcomes"] == ["queued"]


def test_unknown_upload_id_starts_nothing(api, settings, services):
    before = services.queue.count
    response = post_event(
        api.url,
        s3_event(settings.s3_bucket, "temp/00000000-0000-0000-0000-000000000000"),
        settings.webhook_token,
    )
    assert response.json()["outcomes"] == ["duplicate"]
    assert services.queue.count == before


def test_sns_certificate_unreachable_is_503_so_sns_retries(serve_with, signed_sns_message):
    served = serve_with(sns_cert_endpoint_url=f"http://127.0.0.1:{free_port()}")
    response = post_sns(served.url, signed_sns_message)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "cert_unavailable"
    assert response.headers["Retry-After"]


# --- every field bounded before the database sees it (PostgreSQL refuses NUL and over-long values) ----------


def _record(bucket: str, key: str, **object_fields: object) -> dict:
    return {
        "eventName": "ObjectCreated:Put",
        "s3": {"bucket": {"name": bucket}, "object": {"key": key, **object_fields}},
    }


@pytest.mark.parametrize(
    ("change", "field"),
    [
        ({"key": "temp/%00"}, "s3.object.key"),
        ({"key": "temp/\u0000"}, "s3.object.key"),
        ({"key": "temp/%ED%A0%80"}, "s3.object.key"),  # a surrogate, UTF-8 encoded: not Unicode
        ({"key": "temp/" + "a" * 3100}, "s3.object.key"),
        ({"key": "temp/" + "%C3%A9" * 520}, "s3.object.key"),  # 1,045 bytes once decoded
        ({"eTag": "e" * 200_000}, "s3.object.eTag"),
        ({"eTag": "ab\u0000cd"}, "s3.object.eTag"),
        ({"sequencer": "0" * 1000}, "s3.object.sequencer"),
        ({"size": -1}, "s3.object.size"),
        ({"eventName": "ObjectCreated:\u0000"}, "eventName"),
        ({"bucket": "b" * 300}, "s3.bucket.name"),
    ],
    ids=lambda value: str(value)[:24],
)
def test_a_hostile_record_is_422_and_the_others_of_its_event_are_still_handled(
    api, alice: BrokerClient, settings, change: dict, field: str
) -> None:
    good = alice.ticket("avatar", "image/jpeg", images.jpeg(50, 50))
    target = alice.ticket("avatar", "image/jpeg", images.jpeg(50, 50))
    hostile = _record(settings.s3_bucket, f"temp/{target['upload_id']}")
    if "eventName" in change:
        hostile["eventName"] = change["eventName"]
    elif "bucket" in change:
        hostile["s3"]["bucket"]["name"] = change["bucket"]
    else:
        hostile["s3"]["object"].update(change)
    body = {
        "Records": [
            _record(settings.s3_bucket, "public/not-ours"),
            hostile,
            _record(settings.s3_bucket, f"temp%2F{good['upload_id']}", eTag="0" * 32),
        ]
    }

    response = post_event(api.url, body, settings.webhook_token)

    assert response.status_code == 422, response.text
    answer = response.json()
    assert answer["error"]["code"] == "invalid_record"
    assert f"Records[1]: {field}" in answer["error"]["message"]
    assert len(answer["error"]["message"]) < 1000  # the value is not echoed back
    assert answer["outcomes"] == ["ignored", "invalid", "queued"]
    assert alice.status(good["upload_id"]).json()["status"] != "pending"
    assert alice.status(target["upload_id"]).json()["status"] == "pending"

    # The sender's retry is safe: the handled record is a duplicate by now.
    again = post_event(api.url, body, settings.webhook_token)
    assert again.status_code == 422
    assert again.json()["outcomes"] == ["ignored", "invalid", "duplicate"]


def test_a_record_that_is_not_an_object_record_is_invalid_too(api, settings) -> None:
    body = {"Records": [{"eventName": "ObjectCreated:Put"}, "not a record"]}
    response = post_event(api.url, body, settings.webhook_token)
    assert response.status_code == 422
    assert response.json()["outcomes"] == ["invalid", "invalid"]


# --- SNS: certificates from a CA made here (BROKER_SNS_CA_BUNDLE), cached; replays refused -----------------


@pytest.fixture
def sns_ca(tmp_path: Path) -> Iterator[tuple[CertAuthority, CertHost, rsa.RSAPrivateKey]]:
    ca = make_ca(tmp_path)
    key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
    with cert_host() as host:
        host.files[CERT_PATH] = leaf_pem(ca, key)
        yield ca, host, key


CERT_PATH = "/SimpleNotificationService-test.pem"


def _served_with_ca(serve_with, ca: CertAuthority, host: CertHost):
    return serve_with(sns_cert_endpoint_url=host.url, sns_ca_bundle=ca.bundle)


def test_an_sns_message_under_a_trusted_ca_queues_its_upload(
    serve_with, alice: BrokerClient, settings, sns_ca
) -> None:
    ca, host, key = sns_ca
    served = _served_with_ca(serve_with, ca, host)
    ticket = alice.ticket("avatar", "image/jpeg", images.jpeg(50, 50))
    event = json.dumps(s3_event(settings.s3_bucket, f"temp%2F{ticket['upload_id']}"))
    cert_url = f"https://sns.{settings.s3_region}.amazonaws.com{CERT_PATH}"

    response = post_sns(served.url, signed_notification(key, cert_url, settings.sns_topic_arn, event))

    assert response.status_code == 200, response.text
    assert response.json()["outcomes"] == ["queued"]


def test_a_certificate_the_trusted_host_does_not_have_is_403_and_fetched_once(
    serve_with, settings, sns_ca
) -> None:
    ca, host, key = sns_ca
    served = _served_with_ca(serve_with, ca, host)
    forged_url = f"https://sns.{settings.s3_region}.amazonaws.com/SimpleNotificationService-forged.pem"
    event = json.dumps(s3_event(settings.s3_bucket, "temp/x"))
    for _ in range(10):
        response = post_sns(served.url, signed_notification(key, forged_url, settings.sns_topic_arn, event))
        assert response.status_code == 403, response.text
        assert response.json()["error"]["code"] == "cert_not_found"
        assert "Retry-After" not in response.headers
    assert host.hits["/SimpleNotificationService-forged.pem"] == 1


def test_a_replayed_sns_message_is_403_stale_without_a_fetch(serve_with, settings, sns_ca) -> None:
    ca, host, key = sns_ca
    served = _served_with_ca(serve_with, ca, host)
    cert_url = f"https://sns.{settings.s3_region}.amazonaws.com{CERT_PATH}"
    event = json.dumps(s3_event(settings.s3_bucket, "temp/x"))
    two_hours_ago = datetime.now(UTC) - timedelta(hours=2)
    message = signed_notification(key, cert_url, settings.sns_topic_arn, event, sent=two_hours_ago)

    response = post_sns(served.url, message)

    assert response.status_code == 403
    assert response.json()["error"]["code"] == "stale_message"
    assert host.hits[CERT_PATH] == 0


def test_a_certificate_outside_the_trust_store_is_403_untrusted(
    serve_with, settings, sns_ca, signed_sns_message, tmp_path: Path
) -> None:
    ca, host, key = sns_ca
    other = make_ca(tmp_path, "Not Trusted Here")
    host.files[CERT_PATH] = leaf_pem(other, key)
    served = _served_with_ca(serve_with, ca, host)
    cert_url = f"https://sns.{settings.s3_region}.amazonaws.com{CERT_PATH}"
    event = json.dumps(s3_event(settings.s3_bucket, "temp/x"))
    response = post_sns(served.url, signed_notification(key, cert_url, settings.sns_topic_arn, event))
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "untrusted_cert"

    # moto's own certificates chain to nothing: with a trust store set, they are refused the same way.
    moto_with_store = serve_with(sns_ca_bundle=ca.bundle)
    response = post_sns(moto_with_store.url, signed_sns_message)
    assert response.status_code == 403
    assert response.json()["error"]["code"] == "untrusted_cert"
