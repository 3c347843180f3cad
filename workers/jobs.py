"""RQ entry points. A job takes ids, nothing else; retries are declared where the job is queued."""

from __future__ import annotations

from rq import get_current_job

from app.config import get_settings
from app.services import Services
from workers import pipeline

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


def process_upload(upload_id: str) -> str:
    job = get_current_job()
    # RQ decrements `retries_left` before each retry, so 0 (or no retry policy) means this is the last try.
    last_attempt = job is None or not job.retries_left
    return pipeline.run(current_services(), upload_id, last_attempt)
