"""The ticket rate limit's contract, as clients see it: windows per user, headers on every answer, 429 with
`Retry-After`, several limits at once, and requests let through when Redis is down."""

from __future__ import annotations

import time
import uuid

import requests

from app import metrics
from app.devstack.processes import free_port
from tests.conftest import client_for

HEADERS = ("X-RateLimit-Limit", "X-RateLimit-Remaining", "X-RateLimit-Reset", "Retry-After")


def test_every_answer_carries_the_callers_window(serve_with) -> None:
    served = serve_with(ticket_rate_limit="5/minute")
    client = client_for(served)
    issued = client.request_ticket("avatar", "image/jpeg", 10)
    refused = client.request_ticket("avatar", "image/gif", 10)  # a refusal counts, and says so
    assert (issued.status_code, refused.status_code) == (201, 415)
    for answer, remaining in ((issued, "4"), (refused, "3")):
        assert all(name in answer.headers for name in HEADERS), answer.headers
        assert answer.headers["X-RateLimit-Limit"] == "5"
        assert answer.headers["X-RateLimit-Remaining"] == remaining
        reset_in = int(answer.headers["X-RateLimit-Reset"]) - time.time()
        assert 0 < reset_in <= 61
        assert 0 < int(answer.headers["Retry-After"]) <= 60


def test_the_tightest_of_several_limits_refuses(serve_with) -> None:
    served = serve_with(ticket_rate_limit="2/second;3/hour")
    client = client_for(served)
    codes = [client.request_ticket("avatar", "image/jpeg", 10).status_code for _ in range(2)]
    time.sleep(1.1)  # the per-second window is over; the hourly one is not
    third = client.request_ticket("avatar", "image/jpeg", 10)
    fourth = client.request_ticket("avatar", "image/jpeg", 10)
    assert [*codes, third.status_code, fourth.status_code] == [201, 201, 201, 429]
    assert fourth.json()["error"] == {
        "code": "rate_limited",
        "message": "too many upload tickets: limit 3 per 1 hour",
    }
    assert fourth.headers["X-RateLimit-Limit"] == "3"
    assert fourth.headers["X-RateLimit-Remaining"] == "0"
    assert 3500 < int(fourth.headers["Retry-After"]) <= 3600
    assert client_for(served).request_ticket("avatar", "image/jpeg", 10).status_code == 201  # per user


def test_requests_without_a_token_are_401_not_limited_errors(serve_with) -> None:
    served = serve_with(ticket_rate_limit="100/minute")
    answer = requests.post(f"{served.url}/v1/uploads", json={"kind": "avatar"}, timeout=10)
    assert answer.status_code == 401
    assert answer.json()["error"]["code"] == "unauthorized"


def test_a_redis_outage_lets_tickets_through_quickly(serve_with) -> None:
    served = serve_with(redis_url=f"redis://127.0.0.1:{free_port()}/0", ticket_rate_limit="1/minute")
    client = client_for(served, str(uuid.uuid4()))
    started = time.monotonic()
    codes = [client.request_ticket("avatar", "image/jpeg", 10).status_code for _ in range(3)]
    assert codes == [201, 201, 201]  # fail open: the limit cannot be counted, so it does not refuse
    assert time.monotonic() - started < 5


def test_a_tickets_counts_reach_redis_with_the_next_rate_limit_check(serve_with, monkeypatch) -> None:
    """The API's counters ride on the next ticket's rate-limit script call: no round trip of their own."""
    monkeypatch.setattr(metrics, "FLUSH_SECONDS", 3600.0)  # no background flush during this test
    served = serve_with(redis_namespace=f"ratelimit-metrics-{uuid.uuid4().hex[:8]}")
    redis, issued_key = (
        served.services.redis,
        metrics.TICKETS_ISSUED.key(served.services.settings.redis_namespace),
    )
    client = client_for(served)

    assert client.request_ticket("avatar", "image/jpeg", 10).status_code == 201
    assert redis.hget(issued_key, '["avatar"]') is None  # still in the API process
    assert client.request_ticket("avatar", "image/gif", 10).status_code == 415  # its check carries the first
    assert redis.hget(issued_key, '["avatar"]') == b"1"

    scraped = requests.get(f"{served.url}/metrics", timeout=10).text  # a scrape delivers the rest first
    assert 'broker_tickets_issued_total{kind="avatar"} 1.0' in scraped
    assert 'broker_tickets_refused_total{code="unsupported_type"} 1.0' in scraped
    redis.delete(*redis.keys(f"{served.services.settings.redis_namespace}:*"))
