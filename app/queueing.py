"""The RQ side of the broker: a queue per kind of processing, one job per upload, retries declared on the job.

Images, videos and documents have their own queue and job timeout: a worker listening to `uploads` only is
never stuck behind a 1 GiB video, and a video job may run for the better part of an hour.
"""

from __future__ import annotations

from dataclasses import dataclass

from redis import Redis
from rq import Queue, Retry

from app.config import Settings
from app.domain.kinds import Processing

PROCESS_JOB = "workers.jobs.process_upload"


@dataclass(frozen=True)
class ProcessingQueue:
    name: str
    job_timeout_seconds: int


def processing_queues(settings: Settings) -> dict[Processing, ProcessingQueue]:
    """Every processing queue, fastest work first: the order a worker listening to all of them takes jobs."""
    return {
        Processing.IMAGE: ProcessingQueue(settings.queue_name, settings.job_timeout_seconds),
        Processing.PDF: ProcessingQueue(settings.document_queue_name, settings.document_job_timeout_seconds),
        Processing.VIDEO: ProcessingQueue(settings.video_queue_name, settings.video_job_timeout_seconds),
    }


def processing_job_id(upload_id: str) -> str:
    """Deterministic, so the queue itself can tell a replayed upload from a new one."""
    return f"process-{upload_id}"


def redis_connection(settings: Settings) -> Redis:
    return Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)


def upload_queue(settings: Settings, connection: Redis) -> Queue:
    """The image queue, which also carries follow-up jobs and sweeps."""
    return Queue(settings.queue_name, connection=connection)


def enqueue_processing(connection: Redis, settings: Settings, upload_id: str, processing: Processing) -> str:
    """Queue the processing job on its kind's queue; raises redis errors so the caller can answer 503."""
    target = processing_queues(settings)[processing]
    job = Queue(target.name, connection=connection).enqueue(
        PROCESS_JOB,
        upload_id,
        job_id=processing_job_id(upload_id),
        retry=Retry(max=len(settings.job_retry_intervals), interval=list(settings.job_retry_intervals)),
        job_timeout=target.job_timeout_seconds,
        failure_ttl=14 * 24 * 3600,  # failed jobs stay inspectable for ops
        result_ttl=24 * 3600,
        description=f"process upload {upload_id} ({processing.value})",
    )
    return job.id
