"""The services a worker process runs its jobs against: set once by the worker command (or a test), read by
every job and RQ callback. Its own module, imported by jobs and hooks alike, so neither imports the other."""

from __future__ import annotations

from app.config import get_settings
from app.services import Services

_services: Services | None = None


def use_services(services: Services | None) -> None:
    """Run jobs in this process against these services (the worker command and tests set them)."""
    global _services
    _services = services


def current_services() -> Services:
    global _services
    if _services is None:
        _services = Services(get_settings())
    return _services
