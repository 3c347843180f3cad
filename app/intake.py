"""From "the store has an object" to "a job is queued", exactly once per upload.

The database is the arbiter of duplicates: the first event moves the upload `pending` → `uploaded` with a
conditional update and queues the job; a replay, or an event for an upload already further along, finds the
transition taken and starts nothing. If the queue cannot take the job, the transition is undone and the
caller answers 503, so the sender's retry is not mistaken for a duplicate.
"""

from __future__ import annotations

import logging
from enum import StrEnum
from urllib.parse import unquote_plus

from redis.exceptions import RedisError

from app.domain.keys import upload_id_from_temp_key
from app.domain.kinds import processing_for
from app.domain.states import UploadStatus
from app.queueing import enqueue_processing
from app.repository import advance, get_upload
from app.services import Services
from schemas.events import S3EventRecord

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"  # already seen, or the upload has moved on
    IGNORED = "ignored"  # not an object creation under temp/ in our bucket


class QueueUnavailable(Exception):
    """The job could not be queued; nothing was recorded, the sender should retry."""


def object_key(record: S3EventRecord) -> str:
    """S3 URL-encodes keys in events (`temp%2Fa+b.jpg`)."""
    return unquote_plus(record.s3.object.key)


def accept_record(services: Services, record: S3EventRecord, source: str) -> Outcome:
    key = object_key(record)
    context = {"key": key, "stage": "intake", "source": source, "event": record.event_name}
    event_name = record.event_name.removeprefix("s3:")
    upload_id = upload_id_from_temp_key(key)
    if (
        not event_name.startswith("ObjectCreated:")
        or record.s3.bucket.name != services.settings.s3_bucket
        or upload_id is None
    ):
        log.info("event ignored", extra={**context, "outcome": Outcome.IGNORED.value})
        return Outcome.IGNORED
    return queue_upload(services, upload_id, record.s3.object.etag, {**context, "upload_id": upload_id})


def queue_upload(services: Services, upload_id: str, etag: str | None, context: dict[str, str]) -> Outcome:
    """Claim `pending` → `uploaded` and queue the job; used by the webhook and by the reconcile sweep."""
    with services.db.session() as session:
        claimed = advance(session, upload_id, UploadStatus.UPLOADED, event_etag=etag)
    if not claimed:
        log.info("event duplicate or unknown upload", extra={**context, "outcome": Outcome.DUPLICATE.value})
        return Outcome.DUPLICATE
    try:
        enqueue_upload(services, upload_id)
    except RedisError as error:
        with services.db.session() as session:
            advance(session, upload_id, UploadStatus.PENDING)
        log.error("queue unavailable", extra={**context, "outcome": "retry_later", "error": str(error)})
        raise QueueUnavailable(str(error)) from error
    log.info("upload queued", extra={**context, "outcome": Outcome.QUEUED.value})
    return Outcome.QUEUED


def enqueue_upload(services: Services, upload_id: str) -> None:
    """Queue the upload's processing job on the queue of its kind of processing (from the declared type,
    which the ticket pinned); raises redis errors."""
    with services.db.session() as session:
        upload = get_upload(session, upload_id)
        declared_type = upload.declared_type if upload else None
    if declared_type is None:
        return
    enqueue_processing(services.redis, services.settings, upload_id, processing_for(declared_type))
