"""From "the store has an object" to "a job is queued", exactly once per upload.

The database is the arbiter of duplicates: the first event moves the upload `pending` → `uploaded` with a
conditional update, commits, and queues the job under an id derived from the upload; a replay finds the
transition taken and the job queued, and starts nothing; an event for an upload further along starts nothing.
If the queue cannot take the job, the caller answers 503 and the upload stays `uploaded`: the sender's retry
finds no job under the upload's id and queues it (see `queue_upload` for why this order).
"""

from __future__ import annotations

import logging
from enum import StrEnum
from urllib.parse import unquote_plus

from redis.exceptions import RedisError
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy import Select, select

from app.domain.keys import upload_id_from_temp_key
from app.domain.kinds import processing_for
from app.domain.states import UploadStatus
from app.models import Upload
from app.queueing import enqueue_processing, processing_job_id
from app.repository import claim, lock_upload
from app.services import Services
from schemas.events import S3EventRecord

log = logging.getLogger(__name__)


class Outcome(StrEnum):
    QUEUED = "queued"
    DUPLICATE = "duplicate"  # already seen, or the upload has moved on
    IGNORED = "ignored"  # not an object creation under temp/ in our bucket


class QueueUnavailable(Exception):
    """The job could not be queued (the upload stays `uploaded`); the sender should retry."""


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
    """Record `uploaded`, then make sure the upload's job is queued; used by the webhook, `complete` and the
    reconcile sweep. Safe to repeat after any failure: an event for an upload already `uploaded` checks its
    job again and queues it if RQ has none.

    Why record first and enqueue second (and never undo): the job is queued only for a committed `uploaded`,
    so a worker never meets a row that is not there yet, and once the event has been seen the record says so
    whatever fails next. If the enqueue fails (Redis down, or the database during it), the answer is 503 and
    the upload stays `uploaded` without a job; the sender's retry then finds it `uploaded` and queues it (the
    reconcile sweep does the same for an upload whose retries were all lost). Nothing is lost. The old way —
    undo `uploaded` when the enqueue failed — lost uploads when the undo could not run (the database failing
    too: the retry then found `uploaded` and did nothing) or when Redis had in fact taken the job (its worker
    found the row `pending`, did nothing, and the retry's job id was taken). Nothing is doubled: the job id is
    the upload's (`process-<id>`), and `enqueue_upload` checks for it and enqueues under the upload's row
    lock, so two requests for one upload (an event and its duplicate, `complete` and the event it causes)
    queue one job between them.
    """
    with services.db.session() as session:
        claimed = claim(session, upload_id, UploadStatus.UPLOADED, event_etag=etag)
        status = UploadStatus.UPLOADED.value if claimed else session.scalar(_status_of(upload_id))
    if status != UploadStatus.UPLOADED:
        log.info("event duplicate or unknown upload", extra={**context, "outcome": Outcome.DUPLICATE.value})
        return Outcome.DUPLICATE
    try:
        # A fresh claim replaces a dead job of the same id: it ran before this `uploaded` and did nothing.
        queued = enqueue_upload(services, upload_id, replace_dead=claimed is not None)
    except RedisError as error:
        log.error("queue unavailable", extra={**context, "outcome": "retry_later", "error": str(error)})
        raise QueueUnavailable(str(error)) from error
    if not queued:
        log.info("event duplicate, job queued", extra={**context, "outcome": Outcome.DUPLICATE.value})
        return Outcome.DUPLICATE
    log.info(
        "upload queued",
        extra={**context, "outcome": Outcome.QUEUED.value, "retry": "no" if claimed else "yes"},
    )
    return Outcome.QUEUED


def _status_of(upload_id: str) -> Select[tuple[str]]:
    return select(Upload.status).where(Upload.id == upload_id)


# RQ states of a job that will not run again by itself.
_DEAD_JOBS = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED})


def enqueue_upload(services: Services, upload_id: str, replace_dead: bool = False) -> bool:
    """Queue the upload's processing job on the queue of its kind of processing (from the declared type,
    which the ticket pinned) unless RQ already holds a job under its id; True if this call queued it. With
    `replace_dead`, a job that has finished or failed is replaced. Raises redis errors.

    The check and the enqueue run under the upload's row lock (held for those one or two Redis round trips),
    so callers racing for the same upload queue one job between them (see `queue_upload`).
    """
    with services.db.session() as session:
        upload = lock_upload(session, upload_id)
        if upload is None:
            return False
        try:
            job: Job | None = Job.fetch(processing_job_id(upload_id), connection=services.redis)
        except NoSuchJobError:
            job = None
        if job is not None:
            if not replace_dead or job.get_status(refresh=False) not in _DEAD_JOBS:
                return False
            job.delete()
        enqueue_processing(services.redis, services.settings, upload_id, processing_for(upload.declared_type))
    return True
