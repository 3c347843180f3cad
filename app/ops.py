"""Inspecting and repairing the job queues: what `broker queues` and `broker failed …` show and do.

Plain functions over `Services` that return data; the CLI renders it (tables or JSON) and `/metrics` reads
the same queue depths, so the numbers an operator sees and the numbers Prometheus graphs are one thing.

Counts are taken with `LLEN`/`ZCOUNT`/`ZCARD` in one round trip, not with RQ's `registry.count`, which also
runs registry clean-up (moving abandoned jobs to `failed`): a scrape or a look at the queues changes nothing.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from datetime import datetime

from redis import Redis
from rq import Queue, Worker
from rq.exceptions import NoSuchJobError
from rq.job import Job
from rq.registry import FailedJobRegistry
from rq.results import Result

from app.queueing import processing_queues
from app.services import Services

# The job states whose sizes `broker queues` and the queue-depth gauge report.
QUEUE_STATES = ("queued", "started", "abandoned", "failed", "scheduled", "deferred")


@dataclass(frozen=True)
class QueueDepths:
    queue: str
    queued: int  # waiting for a worker
    started: int  # being run by a worker now
    abandoned: int  # started, but the worker stopped heartbeating (killed): the recover sweep re-runs them
    failed: int  # out of retries; kept for inspection (`broker failed list`)
    scheduled: int  # waiting for their retry time
    deferred: int  # waiting for another job
    processing: str | None = None  # the kind of processing this queue carries (image, video, pdf)
    job_timeout_seconds: int | None = None  # how long one of its processing jobs may run

    def by_state(self) -> dict[str, int]:
        return {state: getattr(self, state) for state in QUEUE_STATES}


@dataclass(frozen=True)
class WorkerInfo:
    name: str
    state: str  # RQ's: "idle", "busy", "started", "suspended"
    queues: tuple[str, ...]
    hostname: str | None
    pid: int | None
    current_job_id: str | None
    current_upload_id: str | None
    last_heartbeat: datetime | None


@dataclass(frozen=True)
class AbandonedJob:
    job_id: str
    queue: str
    upload_id: str | None
    worker: str  # the dead worker's name
    last_heartbeat: datetime | None


@dataclass(frozen=True)
class QueuesReport:
    queues: list[QueueDepths]
    workers: list[WorkerInfo]
    abandoned: list[AbandonedJob] = field(default_factory=list)


@dataclass(frozen=True)
class FailedJob:
    job_id: str
    queue: str
    upload_id: str | None
    failed_at: datetime | None
    error: str  # the exception's last line, e.g. "EndpointConnectionError: Could not connect …"


@dataclass(frozen=True)
class RetryOutcome:
    retried: list[str] = field(default_factory=list)
    not_failed: list[str] = field(default_factory=list)  # unknown ids, or jobs not in a failed registry


def queue_names(services: Services, only: Iterable[str] = ()) -> list[str]:
    """`only` if given, else every queue RQ knows of in this Redis plus the processing queues (which may not
    exist yet on a fresh Redis, and should still be reported, empty)."""
    chosen = list(dict.fromkeys(only))
    if chosen:
        return chosen
    known = {queue.name for queue in Queue.all(connection=services.redis)}
    processing = {target.name for target in processing_queues(services.settings).values()}
    return sorted(known | processing)


def queue_depths(services: Services, only: Iterable[str] = ()) -> list[QueueDepths]:
    """Sizes of each queue and of its registries, read in one pipeline.

    Started and failed registries are scored by expiry, so entries already past it (abandoned by a dead
    worker, or failures older than their TTL) are left out, as RQ's own clean-up would drop them."""
    queues = [Queue(name, connection=services.redis) for name in queue_names(services, only)]
    now = time.time()
    with services.redis.pipeline(transaction=False) as pipe:
        for queue in queues:
            pipe.llen(queue.key)
            pipe.zcount(queue.started_job_registry.key, now, "+inf")
            pipe.zcount(queue.started_job_registry.key, "-inf", f"({now}")
            pipe.zcount(queue.failed_job_registry.key, now, "+inf")
            pipe.zcard(queue.scheduled_job_registry.key)
            pipe.zcard(queue.deferred_job_registry.key)
        counts = [int(count) for count in pipe.execute()]
    width = len(QUEUE_STATES)
    carried = {target.name: (kind, target) for kind, target in processing_queues(services.settings).items()}
    depths = []
    for index, queue in enumerate(queues):
        kind, target = carried.get(queue.name, (None, None))
        depths.append(
            QueueDepths(
                queue.name,
                *counts[index * width : (index + 1) * width],
                processing=kind.value if kind else None,
                job_timeout_seconds=target.job_timeout_seconds if target else None,
            )
        )
    return depths


def workers(services: Services) -> list[WorkerInfo]:
    """Every live RQ worker on this Redis (any host), and the job each one is running."""
    found = []
    for worker in Worker.all(connection=services.redis):
        job_id = worker.get_current_job_id()
        job = _fetch(services.redis, job_id) if job_id else None
        found.append(
            WorkerInfo(
                name=worker.name,
                state=worker.get_state(),
                queues=tuple(worker.queue_names()),
                hostname=worker.hostname,
                pid=worker.pid,
                current_job_id=job_id,
                current_upload_id=upload_id_of(job) if job else None,
                last_heartbeat=worker.last_heartbeat,
            )
        )
    return sorted(found, key=lambda info: info.name)


def abandoned_jobs(services: Services, only: Iterable[str] = ()) -> list[AbandonedJob]:
    """Jobs still `started` whose heartbeat expired: their worker died (SIGKILL, OOM, host lost)."""
    found = []
    for name in queue_names(services, only):
        registry = Queue(name, connection=services.redis).started_job_registry
        for job_id in dict.fromkeys(registry.get_expired_job_ids()):
            job = _fetch(services.redis, job_id)
            if job is None or job.get_status(refresh=False) != "started":
                continue
            found.append(
                AbandonedJob(job.id, name, upload_id_of(job), job.worker_name or "?", job.last_heartbeat)
            )
    return found


def queues_report(services: Services, only: Iterable[str] = ()) -> QueuesReport:
    return QueuesReport(queue_depths(services, only), workers(services), abandoned_jobs(services, only))


def failed_jobs(services: Services, only: Iterable[str] = ()) -> list[FailedJob]:
    """Jobs that ran out of retries, newest failure first."""
    found = []
    for name in queue_names(services, only):
        registry = _failed_registry(services, name)
        ids = registry.get_job_ids()
        for job_id, job in zip(ids, Job.fetch_many(ids, connection=services.redis), strict=True):
            if job is None:  # the job's data expired before its registry entry
                found.append(FailedJob(job_id, name, None, None, "job data expired"))
                continue
            found.append(FailedJob(job_id, name, upload_id_of(job), job.ended_at, _error_summary(job)))
    return sorted(found, key=lambda job: job.failed_at.timestamp() if job.failed_at else 0.0, reverse=True)


def retry_failed(services: Services, job_ids: Sequence[str] = (), only: Iterable[str] = ()) -> RetryOutcome:
    """Put failed jobs back on their queue: the given ids, or (with none given) every failed job.

    A retried job gets one more attempt, not a fresh retry budget: if the cause persists it is back in the
    failed list at once, with its upload `failed` again, instead of hiding behind minutes of back-off. The
    upload state machine allows `failed` → `processing`, so the job really reprocesses the upload."""
    outcome = RetryOutcome()
    if job_ids:
        targets = [(job_id, _fetch(services.redis, job_id)) for job_id in dict.fromkeys(job_ids)]
    else:
        targets = [
            (job_id, _fetch(services.redis, job_id))
            for name in queue_names(services, only)
            for job_id in _failed_registry(services, name).get_job_ids()
        ]
    for job_id, job in targets:
        registry = _failed_registry(services, job.origin) if job else None
        if job is None or registry is None or job_id not in registry:
            outcome.not_failed.append(job_id)
            continue
        registry.requeue(job)
        outcome.retried.append(job_id)
    return outcome


def purge_failed(
    services: Services, only: Iterable[str] = (), job_ids: Sequence[str] | None = None
) -> list[str]:
    """Forget failed jobs for good (their uploads stay `failed`): those of `job_ids` still failed, or all of
    them. Returns the ids removed."""
    removed = []
    for name in queue_names(services, only):
        registry = _failed_registry(services, name)
        present = registry.get_job_ids()
        wanted = set(present if job_ids is None else job_ids)
        for job_id in (job_id for job_id in present if job_id in wanted):
            job = _fetch(services.redis, job_id)
            registry.remove(job or job_id, delete_job=job is not None)
            removed.append(job_id)
    return removed


def upload_id_of(job: Job) -> str | None:
    """Jobs take ids (see `workers/jobs.py`): a job whose first argument is a UUID works on that upload."""
    try:
        first = job.args[0] if job.args else None
        return str(uuid.UUID(first)) if isinstance(first, str) else None
    except Exception:  # not a UUID, or job data this process cannot deserialize: no upload to name
        return None


def _error_summary(job: Job) -> str:
    """The last line of the traceback, which names the exception and its message."""
    result = job.latest_result()
    if result is not None and result.type == Result.Type.MAX_RETRIES_EXCEEDED:
        return "retries exhausted (the job returned Retry too often)"
    if result is None or result.type != Result.Type.FAILED or not result.exc_string:
        return "unknown (no failure recorded)"
    lines = [line.strip() for line in result.exc_string.strip().splitlines() if line.strip()]
    return lines[-1][:300] if lines else "unknown"


def _failed_registry(services: Services, queue_name: str) -> FailedJobRegistry:
    return FailedJobRegistry(queue=Queue(queue_name, connection=services.redis))


def _fetch(connection: Redis, job_id: str) -> Job | None:
    try:
        return Job.fetch(job_id, connection=connection)
    except NoSuchJobError:
        return None
