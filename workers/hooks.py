"""What happens after an upload is ready (e.g. food recognition)."""

from __future__ import annotations

from app.models import Upload
from app.services import Services


def after_ready(services: Services, upload: Upload) -> None:
    """Start follow-up work for a freshly promoted upload."""
