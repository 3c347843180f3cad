"""`POST /v1/uploads` over HTTP: the ticket pins key, type, size and expiry, signed with SigV4."""

from __future__ import annotations

import base64
import json
import uuid
from datetime import UTC, datetime, timedelta

import jwt
import pytest
import requests

from tests.conftest import JWT_SECRET, client_for
from tests.support import BrokerClient


def policy_of(ticket: dict) -> dict:
    return json.loads(base64.b64decode(ticket["upload"]["fields"]["policy"]))


def test_ticket_pins_key_type_size_and_expiry_with_sigv4(alice: BrokerClient, settings):
    response = alice.request_ticket("avatar", "image/jpeg", 2048, filename="../me.jpg")

    assert response.status_code == 201
    ticket = response.json()
    upload_id = ticket["upload_id"]
    assert uuid.UUID(upload_id)
    assert ticket["status"] == "pending"
    assert ticket["max_size"] == 2048
    fields = ticket["upload"]["fields"]
    assert ticket["upload"]["method"] == "POST"
    assert fields["key"] == f"temp/{upload_id}"
    assert fields["x-amz-algorithm"] == "AWS4-HMAC-SHA256"
    assert "AWSAccessKeyId" not in fields and "signature" not in fields  # no legacy SigV2
    policy = policy_of(ticket)
    conditions = policy["conditions"]
    assert {"bucket": settings.s3_bucket} in conditions
    assert ["eq", "$key", f"temp/{upload_id}"] in conditions
    assert ["eq", "$Content-Type", "image/jpeg"] in conditions
    assert ["content-length-range", 1, 2048] in conditions
    expiry = datetime.fromisoformat(policy["expiration"].replace("Z", "+00:00"))
    assert timedelta(0) < expiry - datetime.now(UTC) <= timedelta(minutes=15)

    status = alice.status(upload_id)
    assert status.status_code == 200
    assert status.json()["status"] == "pending"


@pytest.mark.parametrize(
    ("body", "status", "code"),
    [
        ({"kind": "avatar", "content_type": "image/gif", "size": 10}, 415, "unsupported_type"),
        ({"kind": "avatar", "content_type": "image/jpeg", "size": 6 * 1024 * 1024}, 413, "too_large"),
        ({"kind": "workout_photo", "content_type": "image/jpeg", "size": 10}, 422, "invalid_request"),
        ({"kind": "nope", "content_type": "image/jpeg", "size": 10}, 422, "invalid_request"),
        ({"kind": "avatar", "content_type": "image/jpeg", "size": 0}, 422, "invalid_request"),
        ({"kind": "avatar", "content_type": "image/jpeg"}, 422, "invalid_request"),
        (
            {"kind": "avatar", "content_type": "image/jpeg", "size": 5, "key": "public/x"},
            422,
            "invalid_request",
        ),
    ],
)
def test_bad_ticket_requests_get_stable_codes(alice: BrokerClient, body, status, code):
    response = requests.post(f"{alice.api_url}/v1/uploads", json=body, headers=alice.headers, timeout=10)
    assert response.status_code == status, response.text
    assert response.json()["error"]["code"] == code
    assert response.json()["error"]["message"]


def test_missing_expired_or_forged_tokens_are_401(api):
    url = f"{api.url}/v1/uploads"
    body = {"kind": "avatar", "content_type": "image/jpeg", "size": 10}
    expired = jwt.encode(
        {"sub": str(uuid.uuid4()), "exp": datetime.now(UTC) - timedelta(hours=1)}, JWT_SECRET
    )
    forged = jwt.encode(
        {"sub": str(uuid.uuid4()), "exp": datetime.now(UTC) + timedelta(hours=1)},
        "a-guessed-secret-of-thirty-two-bytes!!",
    )
    no_exp = jwt.encode({"sub": str(uuid.uuid4())}, JWT_SECRET)
    for headers in (
        {},
        {"Authorization": f"Bearer {expired}"},
        {"Authorization": f"Bearer {forged}"},
        {"Authorization": f"Bearer {no_exp}"},
    ):
        response = requests.post(url, json=body, headers=headers, timeout=10)
        assert response.status_code == 401
        assert response.json()["error"]["code"] == "unauthorized"
        assert response.headers["WWW-Authenticate"] == "Bearer"


def test_staff_only_kinds_are_forbidden_to_others(api):
    body = {"context": {"exercise_id": "squat"}}
    member = client_for(api).request_ticket("exercise_demo", "image/jpeg", 10, **body)
    assert member.status_code == 403
    assert member.json()["error"]["code"] == "forbidden_kind"
    staff = client_for(api, roles=["staff"]).request_ticket("exercise_demo", "image/jpeg", 10, **body)
    assert staff.status_code == 201


def test_unknown_routes_and_methods_answer_json(api):
    missing = requests.get(f"{api.url}/v1/nothing", timeout=10)
    assert missing.status_code == 404
    assert missing.json()["error"]["code"] == "not_found"
    wrong = requests.delete(f"{api.url}/v1/uploads", timeout=10)
    assert wrong.status_code == 405
