"""The lifecycle sweeps: reconcile and recover here, temp clean-up in `workers.cleanup`. Plain functions of
`Services`, run by RQ cron jobs (`workers.scheduled`) and by `broker cleanup-temp` / `broker reconcile` alike.

Both sweeps are safe to run twice at once or to interrupt at any point: every state change is a conditional
transition (`app.repository.advance`), uploads are queued through `app.intake.queue_upload` (the webhook's own
path, so a sweep and a late event cannot both start work), and objects are deleted only when no record could
still need them. `workers.scheduled` adds a Redis lock on top so two runs do not do the same work twice.
"""

from __future__ import annotations

import logging
import time
from collections import Counter
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from redis import Redis
from redis.exceptions import RedisError
from rq import Queue
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from rq.registry import StartedJobRegistry
from sqlalchemy import select

from app.domain.states import UploadStatus
from app.intake import QueueUnavailable, enqueue_upload, queue_upload
from app.models import Upload
from app.queueing import processing_job_id, processing_queues
from app.services import Services

log = logging.getLogger(__name__)

S = UploadStatus
# A job in one of these states will never run again; any other state (queued, started, scheduled for a
# retry, deferred...) means RQ still owns the upload. A `started` job whose worker died is found by its
# expired heartbeat (`recover_jobs`) and handed back to RQ's own abandoned-job handling first.
DEAD_JOB_STATUSES = frozenset({JobStatus.FINISHED, JobStatus.FAILED, JobStatus.STOPPED, JobStatus.CANCELED})

# The worker heartbeats a running job every JOB_HEARTBEAT_SECONDS; RQ lets the entry in the started-job
# registry expire 60 s after the last beat. So a job whose worker was killed is known dead at most
# JOB_HEARTBEAT_SECONDS + 60 s after the kill; `recover_jobs`, every RECOVER_EVERY_SECONDS, hands it back to
# RQ (a retry due after the first retry delay, 10 s) and its next run enqueues the retry: 5 + 60 + 20 + 20 =
# 105 s from the kill to the job queued again, within 2 minutes (asserted in tests/integration/test_recovery).
JOB_HEARTBEAT_SECONDS = 5
RQ_HEARTBEAT_GRACE_SECONDS = 60
RECOVER_EVERY_SECONDS = 20
# RQ marks a job whose worker vanished with this exception: not a verdict on the upload, so it is re-queued
# as soon as a job that vanished with Redis would be, not after `stuck_after_seconds`.
_ABANDONED = "AbandonedJobError"


@dataclass
class SweepReport:
    """What one sweep did (or, in a dry run, would do): counts per stage and outcome, and every action."""

    sweep: str
    dry_run: bool
    settings: dict[str, int]
    counts: dict[str, Counter[str]] = field(default_factory=dict)
    actions: list[dict[str, str]] = field(default_factory=list)
    errors: int = 0

    def count(self, stage: str, outcome: str, n: int = 1) -> None:
        if n:
            self.counts.setdefault(stage, Counter())[outcome] += n

    def act(self, stage: str, outcome: str, upload_id: str | None, key: str, **extra: str) -> None:
        """Record and log one action; `error=` marks it failed (the run then exits non-zero)."""
        self.count(stage, outcome)
        action = {"upload_id": upload_id or "", "key": key, "stage": stage, "outcome": outcome, **extra}
        self.actions.append(action)
        if "error" in extra:
            self.errors += 1
        level = logging.ERROR if "error" in extra else logging.INFO
        log.log(level, f"{self.sweep}: {outcome}", extra={**action, "dry_run": self.dry_run})

    def as_dict(self) -> dict[str, Any]:
        return {
            "sweep": self.sweep,
            "dry_run": self.dry_run,
            "settings": self.settings,
            "counts": {stage: dict(counter) for stage, counter in self.counts.items()},
            "actions": self.actions,
            "errors": self.errors,
        }


# --- shared by the sweeps --------------------------------------------------------------------------------
def upload_states(services: Services, upload_ids: Iterable[str | None]) -> dict[str, tuple[str, datetime]]:
    """Status and time of the last change of each known upload, in one query per page."""
    ids = sorted({upload_id for upload_id in upload_ids if upload_id})
    if not ids:
        return {}
    with services.db.session() as session:
        rows = session.execute(select(Upload.id, Upload.status, Upload.updated_at).where(Upload.id.in_(ids)))
        return {row.id: (row.status, row.updated_at) for row in rows}


# --- reconcile --------------------------------------------------------------------------------------------
def reconcile(services: Services, dry_run: bool = False) -> SweepReport:
    """Recover what lost events and lost jobs left behind.

    1. uploads `uploaded`/`processing` for longer than `stuck_after_seconds` whose processing job is dead
       or gone (Redis lost it, the worker died on its last try) → the job is queued again;
    2. `temp/` objects older than `reconcile_after_seconds` whose upload is still `pending` (or `expired`):
       the S3 event never arrived → queued through `queue_upload`, exactly as the webhook would.
    """
    now = datetime.now(UTC)
    settings = services.settings
    report = SweepReport(
        "reconcile",
        dry_run,
        {
            "reconcile_after_seconds": settings.reconcile_after_seconds,
            "stuck_after_seconds": settings.stuck_after_seconds,
        },
    )
    if not _recover_jobs(services, report):
        return report
    stuck = now - timedelta(seconds=settings.stuck_after_seconds)
    lost = now - timedelta(seconds=min(settings.lost_job_after_seconds, settings.stuck_after_seconds))
    if _requeue_stuck(services, report, stuck, lost):
        _queue_unreported(services, report, now - timedelta(seconds=settings.reconcile_after_seconds))
    return report


def recover_jobs(services: Services, dry_run: bool = False, at: float | None = None) -> SweepReport:
    """Jobs whose worker died, and retries that are due: handed back to RQ now, not at its next maintenance.

    RQ itself finds an abandoned job (its heartbeat expired) only in a worker's registry maintenance, every
    10 minutes, and moves a due retry back to its queue only from a worker's scheduler thread, which a Redis
    blip can stop. This sweep does both, every `RECOVER_EVERY_SECONDS`, with RQ's own functions. `at` (a
    Unix time, default now) is the moment heartbeats are judged at: tests look a minute ahead.
    """
    report = SweepReport("recover", dry_run, {"job_heartbeat_seconds": JOB_HEARTBEAT_SECONDS})
    _recover_jobs(services, report, at)
    return report


def _recover_jobs(services: Services, report: SweepReport, at: float | None = None) -> bool:
    """Returns False if Redis refused, so reconcile stops (the next run retries)."""
    try:
        for target in processing_queues(services.settings).values():
            _recover_queue(services, Queue(target.name, connection=services.redis), report, at)
    except RedisError as error:
        report.act("recover_jobs", "queue_unavailable", None, "", error=str(error))
        return False
    return True


def _recover_queue(services: Services, queue: Queue, report: SweepReport, at: float | None) -> None:
    stage = "recover_jobs"
    started = StartedJobRegistry(queue=queue)
    for job_id in started.get_expired_job_ids(at):
        report.act(
            stage, "would_recover" if report.dry_run else "recovered", _upload_of(job_id), "", job=job_id
        )
    if report.dry_run:
        return
    # RQ's handling: failure callbacks, then a retry (scheduled) if retries are left, else `failed`.
    started.cleanup(at)
    for job_id in enqueue_due_retries(queue):
        report.act(stage, "retry_enqueued", _upload_of(job_id), "", job=job_id)


def enqueue_due_retries(queue: Queue) -> list[str]:
    """Move the retries that are due from the queue's scheduled registry back onto it; the ids moved.

    Also run by `broker scheduler` about every second, so retries are on time even when every worker's
    scheduler thread is down."""
    scheduled = queue.scheduled_job_registry
    due = scheduled.get_jobs_to_schedule(int(time.time()))
    moved = []
    for job_id, job in zip(due, Job.fetch_many(due, connection=queue.connection), strict=True):
        # Taken off the registry first, and enqueued only by whoever took it: a worker's scheduler thread
        # (or a second sweep) moving the same retry at the same moment does not queue it twice. An id
        # whose job expired is just dropped.
        if not queue.connection.zrem(scheduled.key, job_id) or job is None:
            continue
        queue.enqueue_job(job)
        moved.append(job_id)
    return moved


def _upload_of(job_id: str) -> str | None:
    prefix = processing_job_id("")
    return job_id[len(prefix) :] if job_id.startswith(prefix) else None


def processing_job(connection: Redis, upload_id: str) -> Job | None:
    """The upload's processing job (by its deterministic id), or None if RQ has no such job."""
    try:
        return Job.fetch(processing_job_id(upload_id), connection=connection)
    except NoSuchJobError:
        return None


def _requeue_stuck(services: Services, report: SweepReport, stuck: datetime, lost: datetime) -> bool:
    """Re-queue in-flight uploads whose job is gone or dead. Returns False if Redis refused.

    A job that is gone (Redis lost it) or was abandoned (its worker died) says nothing about the upload, so
    it is re-queued once the upload has been still since `lost`; a job that finished or failed otherwise
    waits until `stuck` (above the job timeout and retry delays).
    """
    stage = "reconcile_stuck"
    in_flight = [S.UPLOADED.value, S.PROCESSING.value]
    with services.db.session() as session:
        candidates = session.execute(
            select(Upload.id, Upload.temp_key, Upload.updated_at)
            .where(Upload.status.in_(in_flight), Upload.updated_at <= max(stuck, lost))
            .order_by(Upload.updated_at)
        ).all()
    for upload_id, key, updated_at in candidates:
        try:
            job = processing_job(services.redis, upload_id)
            job_status = job.get_status(refresh=False) if job is not None else None
            if job_status is not None and job_status not in DEAD_JOB_STATUSES:
                report.count(stage, "kept_job_alive")
                continue
            lost_job = job is None or (job_status == JobStatus.FAILED and _abandoned(job))
            if as_utc(updated_at) > (lost if lost_job else stuck):
                report.count(stage, "kept_young")
                continue
            previous = {"previous_job": job_status.value if job_status else "none"}
            if report.dry_run:
                report.act(stage, "would_requeue", upload_id, key, **previous)
                continue
            if job is not None:
                # A fresh job, not the dead one's leftovers (status, failure entry) under the same id. If the
                # upload finished meanwhile, the new job's claim fails and it does nothing.
                job.delete()
            enqueue_upload(services, upload_id)
        except RedisError as error:
            report.act(stage, "queue_unavailable", upload_id, key, error=str(error))
            return False
        report.act(stage, "requeued", upload_id, key, **previous)
    return True


def _abandoned(job: Job) -> bool:
    """Whether RQ failed the job because its worker vanished (`StartedJobRegistry.cleanup`)."""
    result = job.latest_result()
    return _ABANDONED in ((result.exc_string if result else None) or job._exc_info or "")


def as_utc(moment: datetime) -> datetime:
    """SQLite hands back naive datetimes (stored as UTC)."""
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _queue_unreported(services: Services, report: SweepReport, cutoff: datetime) -> None:
    stage = "reconcile_temp"
    waiting = {S.PENDING.value, S.EXPIRED.value}
    for page in services.storage.list_temp_pages():
        old = [obj for obj in page if obj.last_modified <= cutoff]
        report.count(stage, "kept_young", len(page) - len(old))
        states = upload_states(services, (obj.upload_id for obj in old))
        for obj in old:
            upload_id = obj.upload_id or ""
            status, _ = states.get(upload_id, (None, None))
            if status not in waiting:
                report.count(stage, "skipped_reported" if status else "skipped_unknown")
                continue
            if report.dry_run:
                report.act(stage, "would_queue", upload_id, obj.key, status=status)
                continue
            context = {"upload_id": upload_id, "key": obj.key, "stage": stage, "source": "reconcile"}
            try:
                outcome = queue_upload(services, upload_id, obj.etag or None, context)
            except QueueUnavailable as error:
                report.act(stage, "queue_unavailable", upload_id, obj.key, error=str(error))
                return
            report.act(stage, outcome.value, upload_id, obj.key, status=status)
