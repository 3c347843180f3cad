"""The store refuses what a ticket does not allow (the local stack enforces POST policies as AWS does).

The worker re-checks everything anyway (defence in depth); these tests prove the first layer: a client holding
a broker ticket cannot upload more bytes, another type, to another key, late, or with a doctored policy.
"""

from __future__ import annotations

import base64
import json
import time
import xml.etree.ElementTree as ET

import requests

from app.services import Services
from tests import images
from tests.conftest import client_for
from tests.support import BrokerClient


def s3_error(response: requests.Response) -> tuple[int, str]:
    return response.status_code, ET.fromstring(response.content).findtext("Code") or ""


def post_with(ticket: dict, data: bytes, **changed_fields: str) -> requests.Response:
    fields = {**ticket["upload"]["fields"], **changed_fields}
    return requests.post(ticket["upload"]["url"], data=fields, files={"file": ("x", data)}, timeout=30)


def nothing_stored(services: Services, *keys: str) -> bool:
    return all(services.storage.head(key) is None for key in keys)


def test_a_file_over_the_tickets_size_is_refused(alice: BrokerClient, services):
    data = images.jpeg(200, 200)
    ticket = alice.ticket("avatar", "image/jpeg", data)

    response = BrokerClient.post_to_store(ticket, data + b"\0" * 10)

    assert s3_error(response) == (400, "EntityTooLarge")
    assert nothing_stored(services, f"temp/{ticket['upload_id']}")
    assert alice.status(ticket["upload_id"]).json()["status"] == "pending"


def test_another_content_type_is_refused(alice: BrokerClient, services):
    data = images.jpeg(50, 50)
    ticket = alice.ticket("avatar", "image/jpeg", data)

    response = post_with(ticket, data, **{"Content-Type": "text/html"})

    assert s3_error(response) == (403, "AccessDenied")
    assert "Content-Type" in response.text
    assert nothing_stored(services, f"temp/{ticket['upload_id']}")


def test_another_key_is_refused(alice: BrokerClient, services):
    data = images.jpeg(50, 50)
    ticket = alice.ticket("avatar", "image/jpeg", data)

    response = post_with(ticket, data, key="public/evil.jpg")

    assert s3_error(response) == (403, "AccessDenied")
    assert nothing_stored(services, "public/evil.jpg", f"temp/{ticket['upload_id']}")


def test_an_expired_ticket_is_refused(services, serve_with):
    served = serve_with(ticket_ttl_seconds=1)
    client = client_for(served)
    data = images.jpeg(50, 50)
    ticket = client.ticket("avatar", "image/jpeg", data)
    time.sleep(2.1)

    response = BrokerClient.post_to_store(ticket, data)

    assert s3_error(response) == (403, "AccessDenied")
    assert "Policy expired" in response.text
    assert nothing_stored(services, f"temp/{ticket['upload_id']}")


def test_a_tampered_policy_is_refused(alice: BrokerClient, services):
    data = images.jpeg(50, 50)
    ticket = alice.ticket("avatar", "image/jpeg", data)
    policy = json.loads(base64.b64decode(ticket["upload"]["fields"]["policy"]))
    policy["conditions"] = [
        ["content-length-range", 1, 10**9] if isinstance(c, list) and c[0] == "content-length-range" else c
        for c in policy["conditions"]
    ]
    widened = base64.b64encode(json.dumps(policy).encode()).decode()

    response = post_with(ticket, data + b"\0" * 1000, policy=widened)

    assert s3_error(response) == (403, "SignatureDoesNotMatch")
    assert nothing_stored(services, f"temp/{ticket['upload_id']}")


def test_the_ticket_as_issued_is_accepted(alice: BrokerClient, services, drain):
    data = images.jpeg(50, 50)
    ticket = alice.ticket("avatar", "image/jpeg", data)

    response = BrokerClient.post_to_store(ticket, data)

    assert response.status_code == 204
    alice.wait_status(ticket["upload_id"], {"uploaded"})
    drain()
    assert alice.status(ticket["upload_id"]).json()["status"] == "ready"
