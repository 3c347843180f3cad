"""Work that follows an upload becoming `ready`, registered here by dotted path.

The pipeline runs every registered follow-up after promotion and never imports them, so a follow-up may use
anything in `workers` (and queue its own jobs) without an import cycle through the pipeline. A follow-up is
`(services, upload) -> None`; it must be idempotent (a replayed job may run it again) and must not change the
upload's fate: one that raises is logged and the upload stays `ready`.
"""

from __future__ import annotations

import logging

from rq.utils import import_attribute

from app.models import Upload
from app.services import Services

log = logging.getLogger(__name__)

FOLLOW_UPS: tuple[str, ...] = (
    "workers.hooks.start_food_recognition",  # food images → the nutrition service's recognition job
    "app.avatars.supersede_older",  # a new avatar → the owner's previous one is superseded
)


def run_follow_ups(services: Services, upload: Upload) -> None:
    for path in FOLLOW_UPS:
        try:
            import_attribute(path)(services, upload)
        except Exception:
            log.exception(
                "follow-up failed",
                extra={"upload_id": upload.id, "stage": "follow_up", "follow_up": path, "outcome": "failed"},
            )
