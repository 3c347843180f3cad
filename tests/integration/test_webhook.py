"""The webhook: who may report events, what starts work, and what happens when the queue is down."""

from __future__ import annotations

import json
import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import ClassVar

import pytest
import requests

from app.devstack.processes import free_port
from tests import images
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


def test_queue_down_answers_503_and_keeps_the_upload_pending(api, alice, settings, serve_with):
    ticket = alice.ticket("avatar", "image/jpeg", images.jpeg(50, 50))
    broken = serve_with(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    body = s3_event(settings.s3_bucket, f"temp%2F{ticket['upload_id']}")
    response = post_event(broken.url, body, settings.webhook_token)
    assert response.status_code == 503
    assert response.json()["error"]["code"] == "queue_unavailable"
    assert alice.status(ticket["upload_id"]).json()["status"] == "pending"

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
