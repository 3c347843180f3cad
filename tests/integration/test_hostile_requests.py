"""Hostile requests over real HTTP: each is a 4xx with a stable code in the JSON error shape, never a 500.

The id and query cases run on PostgreSQL too (the `database_url` fixture), where a NUL byte used to reach
psycopg and answer 500.
"""

from __future__ import annotations

import logging
import resource
import uuid
from collections.abc import Iterator

import jwt
import pytest
import requests

from app.auth import mint_token
from tests.conftest import JWT_SECRET, client_for
from tests.support import ServedApp


def _code(response: requests.Response) -> str:
    return response.json()["error"]["code"]


def test_ids_that_are_not_uuids_are_404_on_every_database(serve_with, database_url: str) -> None:
    served: ServedApp = serve_with(database_url=database_url)
    user = client_for(served)
    for method, path in [
        ("GET", "/v1/uploads/%00"),
        ("GET", "/v1/media/%00"),
        ("DELETE", "/v1/media/%00"),
        ("GET", "/v1/uploads/not-a-uuid"),
        ("GET", "/v1/media/{" + str(uuid.uuid4()) + "}"),
    ]:
        response = requests.request(method, served.url + path, headers=user.headers, timeout=10)
        assert response.status_code == 404, (method, path, response.text)
        assert _code(response) == "not_found"


def test_query_values_with_control_characters_are_422(serve_with, database_url: str) -> None:
    served: ServedApp = serve_with(database_url=database_url)
    user = client_for(served)
    for query in ["kind=%00", "kind=avatar%0a", "owner=%00", "cursor=%01"]:
        response = requests.get(f"{served.url}/v1/media?{query}", headers=user.headers, timeout=10)
        assert response.status_code == 422, (query, response.text)
        assert _code(response) == "invalid_request"
    assert (
        requests.get(f"{served.url}/v1/media?kind=avatar", headers=user.headers, timeout=10).status_code
        == 200
    )


def test_bodies_that_are_not_json_objects_are_invalid_json(api: ServedApp) -> None:
    user = client_for(api)
    deep = b"[" * 10_000 + b"]" * 10_000
    nested_object = b'{"kind": ' + b'{"a":' * 10_000 + b"1" + b"}" * 10_001
    for body in [b"kind=avatar", b"", b"[1, 2]", b'"avatar"', b"{", deep, nested_object]:
        response = requests.post(
            f"{api.url}/v1/uploads",
            data=body,
            headers={**user.headers, "Content-Type": "application/json"},
            timeout=10,
        )
        assert response.status_code == 400, (body[:20], response.text)
        assert _code(response) == "invalid_json"
    # The content type is not what decides: a JSON body sent as text/plain is still read (mobile clients
    # and curl get it wrong); a body that does not parse is invalid_json whatever its type.
    response = requests.post(
        f"{api.url}/v1/uploads",
        data=b"<xml/>",
        headers={**user.headers, "Content-Type": "text/xml"},
        timeout=10,
    )
    assert response.status_code == 400 and _code(response) == "invalid_json"


def test_bodies_over_the_cap_are_413_before_auth_and_on_the_webhook(api: ServedApp) -> None:
    cap = api.services.settings.max_request_bytes
    for path, headers in [("/v1/uploads", {}), ("/v1/grants", client_for(api).headers)]:
        response = requests.post(api.url + path, data=b"{" + b" " * cap + b"}", headers=headers, timeout=30)
        assert response.status_code == 413, response.text
        assert _code(response) == "request_too_large"
    # The webhook takes an SNS message of up to 256 KB (a larger cap), and refuses more.
    sns_sized = b'{"Records": []' + b" " * (250 * 1024) + b"}"
    response = requests.post(
        f"{api.url}/v1/events/s3", data=sns_sized, headers={"Authorization": "Bearer wrong"}, timeout=30
    )
    assert response.status_code == 401, response.text
    response = requests.post(f"{api.url}/v1/events/s3", data=b" " * (400 * 1024), timeout=30)
    assert response.status_code == 413 and _code(response) == "request_too_large"


def test_a_chunked_body_without_length_is_cut_at_the_cap(api: ServedApp) -> None:
    """300 MiB, chunked, to the unauthenticated webhook: 413, and the serving process (this one: the app runs in
    a thread here) does not hold the body — its peak RSS grows far less than the body's size."""
    peak_before = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024

    def chunks() -> Iterator[bytes]:
        block = b" " * (1024 * 1024)
        for _ in range(300):
            yield block

    try:
        response = requests.post(f"{api.url}/v1/events/s3", data=chunks(), timeout=120)
    except requests.RequestException:
        response = None  # the server answered and closed while we were still sending: also a refusal
    if response is not None:
        assert response.status_code == 413, response.text
        assert _code(response) == "request_too_large"
    grown = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024 - peak_before
    assert grown < 100 * 1024 * 1024, grown


def test_unknown_methods_are_405_with_allow(api: ServedApp) -> None:
    response = requests.request("TRACE", f"{api.url}/v1/uploads", timeout=10)
    assert response.status_code == 405
    assert _code(response) == "method_not_allowed"
    assert "POST" in response.headers["Allow"]


def test_context_values_must_match_fully(api: ServedApp) -> None:
    user = client_for(api)
    for value in ["w1\n", "w1\r", "../w1", "w/1", ""]:
        response = user.request_ticket("workout_photo", "image/jpeg", 1000, context={"workout_id": value})
        assert response.status_code == 422, (value, response.text)
        assert _code(response) == "invalid_request"


def _token(**claims: object) -> str:
    return jwt.encode(
        {"sub": str(uuid.uuid4()), "exp": 2_000_000_000, **claims}, JWT_SECRET, algorithm="HS256"
    )


def test_tokens_are_refused_unless_sane(api: ServedApp) -> None:
    import time

    now = int(time.time())
    user_id = uuid.uuid4()
    bad = {
        "exp 2**70": _token(exp=2**70),
        "exp in 60 days": _token(exp=now + 60 * 86400),
        "iat in the future": _token(exp=now + 600, iat=now + 3600),
        "braced sub": _token(sub="{" + str(user_id) + "}", exp=now + 600),
        "urn sub": _token(sub=f"urn:uuid:{user_id}", exp=now + 600),
        "dash-less sub": _token(sub=user_id.hex, exp=now + 600),
        "upper-case sub": _token(sub=str(user_id).upper(), exp=now + 600),
    }
    for name, token in bad.items():
        response = requests.get(
            f"{api.url}/v1/media", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert response.status_code == 401, (name, response.text)
        assert _code(response) == "unauthorized"
    good = requests.get(
        f"{api.url}/v1/media", headers={"Authorization": f"Bearer {_token(exp=now + 600)}"}, timeout=10
    )
    assert good.status_code == 200


def test_audience_and_issuer_are_required_when_configured(serve_with) -> None:
    served: ServedApp = serve_with(jwt_audience="upload-broker", jwt_issuer="https://auth.example")
    user_id = str(uuid.uuid4())
    plain = mint_token(JWT_SECRET, user_id)
    now = int(__import__("time").time())
    right = _token(sub=user_id, exp=now + 600, aud="upload-broker", iss="https://auth.example")
    wrong = _token(sub=user_id, exp=now + 600, aud="other", iss="https://auth.example")
    for token, status in [(plain, 401), (wrong, 401), (right, 200)]:
        response = requests.get(
            f"{served.url}/v1/media", headers={"Authorization": f"Bearer {token}"}, timeout=10
        )
        assert response.status_code == status, response.text


def test_tokenless_requests_are_a_clean_401(api: ServedApp, caplog: pytest.LogCaptureFixture) -> None:
    # The rate limiter's key function runs before the view; it used to log an ERROR traceback each time.
    with caplog.at_level(logging.ERROR):
        response = requests.post(f"{api.url}/v1/uploads", json={"kind": "avatar"}, timeout=10)
    assert response.status_code == 401 and _code(response) == "unauthorized"
    assert [r for r in caplog.records if r.levelno >= logging.ERROR] == []
    assert response.headers["WWW-Authenticate"] == "Bearer"


# --- server and schema agree (issue 22, section 6): strict JSON types, strict query values -------------------


@pytest.mark.parametrize(
    ("field", "value"),
    [("size", True), ("size", "1000"), ("size", 1.0), ("size", 1e3), ("resumable", "yes"), ("resumable", 1)],
)
def test_json_bodies_are_not_coerced(api: ServedApp, field: str, value: object) -> None:
    body = {"kind": "avatar", "content_type": "image/jpeg", "size": 1000, field: value}
    response = requests.post(f"{api.url}/v1/uploads", json=body, headers=client_for(api).headers, timeout=10)
    assert response.status_code == 422, response.text
    assert _code(response) == "invalid_request"
    assert field in response.json()["error"]["message"]


def test_context_and_grant_bodies_are_read_as_their_schema_says(api: ServedApp) -> None:
    user = client_for(api)
    for context in [{"meal_date": "2026-13-01"}, {"workout_id": "a/b"}, {"document_id": ""}]:
        body = {"kind": "food_image", "content_type": "image/jpeg", "size": 10, "context": context}
        response = requests.post(f"{api.url}/v1/uploads", json=body, headers=user.headers, timeout=10)
        assert response.status_code == 422, (context, response.text)
    good = {
        "kind": "food_image",
        "content_type": "image/jpeg",
        "size": 10,
        "context": {"meal_date": "2026-01-02"},
    }
    assert (
        requests.post(f"{api.url}/v1/uploads", json=good, headers=user.headers, timeout=10).status_code == 201
    )
    for viewer in ["", "0" * 32, "{" + str(uuid.uuid4()) + "}", 7]:
        body = {"viewer_id": viewer, "relation": "friend"}
        response = requests.post(f"{api.url}/v1/grants", json=body, headers=user.headers, timeout=10)
        assert response.status_code == 422, (viewer, response.text)
    upper = {"viewer_id": str(uuid.uuid4()).upper(), "relation": "friend"}
    created = requests.post(f"{api.url}/v1/grants", json=upper, headers=user.headers, timeout=10)
    assert created.status_code == 201
    assert created.json()["viewer_id"] == upper["viewer_id"].lower()


@pytest.mark.parametrize(
    "query",
    ["owner=", "kind=", "limit=", "cursor=", "kind=avatar&kind=avatar", "kin=avatar", "owner=x&x=1"],
)
def test_empty_repeated_and_unknown_query_parameters_are_422(api: ServedApp, query: str) -> None:
    response = requests.get(f"{api.url}/v1/media?{query}", headers=client_for(api).headers, timeout=10)
    assert response.status_code == 422, response.text
    assert _code(response) == "invalid_request"


def test_grants_direction_is_one_of_two_and_never_empty(api: ServedApp) -> None:
    user = client_for(api)
    for query, status in [("", 200), ("?direction=given", 200), ("?direction=received", 200)]:
        assert (
            requests.get(f"{api.url}/v1/grants{query}", headers=user.headers, timeout=10).status_code
            == status
        )
    for query in ["?direction=", "?direction=sideways", "?direction=given&direction=given"]:
        response = requests.get(f"{api.url}/v1/grants{query}", headers=user.headers, timeout=10)
        assert response.status_code == 422, (query, response.text)
    document = requests.get(f"{api.url}/v1/documents/plan?owner=", headers=user.headers, timeout=10)
    assert document.status_code == 422


def test_complete_takes_what_its_schema_allows_and_no_more(api: ServedApp) -> None:
    """The most parts an upload can have, each with the longest eTag the schema allows, fit the body cap (the
    answer is about the upload, 404 here); one part more is 422, not 413."""
    from schemas.uploads import MAX_UPLOAD_PARTS

    user = client_for(api)
    url = f"{api.url}/v1/uploads/{uuid.uuid4()}/complete"
    etag = '"' + "f" * 64 + '"'
    most = {"parts": [{"part_number": n, "etag": etag} for n in range(1, MAX_UPLOAD_PARTS + 1)]}
    response = requests.post(url, json=most, headers=user.headers, timeout=10)
    assert response.status_code == 404, response.text
    more = {"parts": [{"part_number": n, "etag": etag} for n in range(1, MAX_UPLOAD_PARTS + 2)]}
    response = requests.post(url, json=more, headers=user.headers, timeout=10)
    assert response.status_code == 422, response.text
    bad_etag = {"parts": [{"part_number": 1, "etag": "x" * 200}]}
    assert requests.post(url, json=bad_etag, headers=user.headers, timeout=10).status_code == 422
