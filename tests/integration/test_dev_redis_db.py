"""Two `broker dev` stacks on one Redis get a database each (a lease), a stack started again from the same
place takes its own back, a URL the user set is kept and the banner says it is shared, and a stopped stack's
lease is gone. Against a real, private redis-server."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest
from redis import Redis

from app.devstack.redis_db import LEASE_KEY, Claim, LeaseKeeper, claim_database, with_database
from app.devstack.redis_server import start_redis


@pytest.fixture
def redis_url(tmp_path: Path) -> Iterator[str]:
    url, process = start_redis(tmp_path)
    yield url
    process.stop()


def test_two_stacks_get_two_databases_and_a_restarted_stack_its_own(redis_url: str):
    first = claim_database(redis_url, "/a port 8000", user_set=False)
    second = claim_database(redis_url, "/b port 8001", user_set=False)
    assert (first.url, first.held, first.note()) == (with_database(redis_url, 0), True, "")
    assert (second.url, second.held) == (with_database(redis_url, 1), True)
    assert "/a port 8000" in second.note()
    again = claim_database(redis_url, "/b port 8001", user_set=False)
    assert again.url == second.url


def test_a_database_with_someone_elses_data_is_skipped(redis_url: str):
    claim_database(redis_url, "/a port 8000", user_set=False)
    Redis.from_url(with_database(redis_url, 1)).set("not-ours", "1")
    assert claim_database(redis_url, "/b port 8001", user_set=False).url == with_database(redis_url, 2)


def test_the_users_url_is_kept_and_said_to_be_shared(redis_url: str):
    claim_database(redis_url, "/a port 8000", user_set=False)
    shared = claim_database(redis_url, "/b port 8001", user_set=True)
    assert (shared.url, shared.held) == (redis_url, False)
    assert "shared with another broker dev, /a port 8000" in shared.note()
    assert f"BROKER_REDIS_URL={with_database(redis_url, 1)}" in shared.note()


def test_a_stopped_stack_leaves_its_database_to_the_next(redis_url: str):
    owner = "/a port 8000"
    claim = claim_database(redis_url, owner, user_set=False)
    keeper = LeaseKeeper(claim, owner, lambda _: None)
    keeper.start()
    assert 0 < Redis.from_url(claim.url).ttl(LEASE_KEY) <= 60
    keeper.stop()
    assert Redis.from_url(claim.url).get(LEASE_KEY) is None
    assert claim_database(redis_url, "/b port 8001", user_set=False).url == claim.url
    assert Claim(redis_url, held=False).note() == ""
