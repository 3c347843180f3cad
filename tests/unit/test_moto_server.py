"""The local stack's moto server answers each host name with the backend moto's own lookup finds."""

from __future__ import annotations

import pytest
from moto.moto_server.werkzeug_app import DomainDispatcherApplication, create_backend_app

from app.devstack.moto_server import CachedDispatcher


@pytest.mark.parametrize(
    "host", ["s3.us-east-1.amazonaws.com", "sns.us-east-1.amazonaws.com", "127.0.0.1:5000", "moto_api", None]
)
def test_the_cached_lookup_answers_as_motos_own(host: str | None) -> None:
    cached = CachedDispatcher()
    expected = DomainDispatcherApplication(create_backend_app).get_backend_for_host(host)
    assert cached.get_backend_for_host(host) == expected
    assert cached.get_backend_for_host(host) == expected  # the second answer comes from the cache
