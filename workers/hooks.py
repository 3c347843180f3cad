"""The food-recognition hook, a follow-up of a ready food image (registered in `workers.followups`).

When a `food_image` is ready and `BROKER_FOOD_RECOGNITION_JOB` names a job (a dotted path, e.g.
`nutrition.jobs.recognize`), that job is queued on the upload queue as

    recognize(upload_id: str, key: str, url: str) -> Any

with the final key and a URL it can fetch (the CDN URL; a presigned GET for private media). When it returns,
RQ runs `mark_ai_processed` (its `on_success` callback) and the upload gets `ai_processed = True`.

The hook is follow-up work, never part of the upload's fate: nothing here can move a ready upload to any
other state. A hook that cannot be queued is logged and dropped; a hook job that fails stays in RQ's failed
registry (no automatic retry: `broker failed retry` re-runs it, and its success still marks the upload).
"""

from __future__ import annotations

import logging
from types import TracebackType
from typing import Any

from redis import Redis
from rq import Callback
from rq.job import Job
from sqlalchemy import update

from app.domain.kinds import Visibility
from app.domain.states import UploadStatus
from app.models import Upload
from app.repository import get_upload
from app.services import Services
from workers.context import current_services

log = logging.getLogger(__name__)

FOOD_RECOGNITION_KINDS = frozenset({"food_image"})
FAILURE_TTL = 14 * 24 * 3600  # failed hook jobs stay inspectable (and retryable) for ops


def food_recognition_job_id(upload_id: str) -> str:
    """Deterministic, so a replayed promotion cannot queue the hook twice."""
    return f"food-recognition-{upload_id}"


def start_food_recognition(services: Services, upload: Upload) -> None:
    """A registered follow-up (`workers.followups`): queue the recognition job for a ready food image."""
    job_path = services.settings.food_recognition_job
    if not job_path or upload.kind not in FOOD_RECOGNITION_KINDS:
        return
    # The caller's object predates promotion; the record has the final key and the current state.
    with services.db.session() as session:
        current = get_upload(session, upload.id)
    if current is None or current.status != UploadStatus.READY.value or not current.final_key:
        return
    key = current.final_key
    if Visibility(current.visibility) == Visibility.PUBLIC:
        url = services.storage.public_url(key)
    else:
        url = services.storage.presign_get(key, services.settings.job_timeout_seconds)
    services.queue.enqueue(
        job_path,
        upload.id,
        key=key,
        url=url,
        job_id=food_recognition_job_id(upload.id),
        on_success=Callback(mark_ai_processed),
        on_failure=Callback(log_food_recognition_failure),
        job_timeout=services.settings.job_timeout_seconds,
        failure_ttl=FAILURE_TTL,
        description=f"food recognition for upload {upload.id}",
    )
    log.info(
        "food recognition queued",
        extra={"upload_id": upload.id, "key": key, "stage": "food_recognition", "outcome": "queued"},
    )


def mark_ai_processed(job: Job, connection: Redis, result: Any, *args: Any, **kwargs: Any) -> None:
    """RQ `on_success` callback of the hook job: record that recognition ran for this upload.

    Only a `ready` upload is marked (one deleted meanwhile stays as it is). If this raises, RQ records the
    hook job as failed, so a retry marks it later.
    """
    upload_id = str(job.args[0])
    with current_services().db.session() as session:
        session.execute(
            update(Upload)
            .where(Upload.id == upload_id, Upload.status == UploadStatus.READY.value)
            .values(ai_processed=True)
        )
    log.info("ai processed", extra={"upload_id": upload_id, "stage": "food_recognition", "outcome": "done"})


def log_food_recognition_failure(
    job: Job,
    connection: Redis,
    exc_type: type[BaseException] | None,
    exc_value: BaseException | None,
    traceback: TracebackType | None,
) -> None:
    """RQ `on_failure` callback: the upload stays ready with `ai_processed` false; say why, with its id."""
    log.warning(
        "food recognition failed",
        extra={
            "upload_id": str(job.args[0]) if job.args else "",
            "stage": "food_recognition",
            "outcome": "failed",
            "error": f"{exc_type.__name__ if exc_type else 'Error'}: {exc_value}",
        },
    )
