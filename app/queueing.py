"""The RQ side of the broker: one queue, one job per upload, retries declared on the job."""

from __future__ import annotations

from redis import Redis
from rq import Queue, Retry

from app.config import Settings

PROCESS_JOB = "workers.jobs.process_upload"


def processing_job_id(upload_id: str) -> str:
    """Deterministic, so the queue itself can tell a replayed upload from a new one."""
    return f"process-{upload_id}"


def redis_connection(settings: Settings) -> Redis:
    return Redis.from_url(settings.redis_url, socket_timeout=5, socket_connect_timeout=2)


def upload_queue(settings: Settings, connection: Redis) -> Queue:
    return Queue(settings.queue_name, connection=connection)


def enqueue_processing(queue: Queue, settings: Settings, upload_id: str) -> str:
    """Queue the processing job; raises redis errors so the caller can answer 503."""
    job = queue.enqueue(
        PROCESS_JOB,
        upload_id,
        job_id=processing_job_id(upload_id),
        retry=Retry(max=len(settings.job_retry_intervals), interval=list(settings.job_retry_intervals)),
        job_timeout=settings.job_timeout_seconds,
        failure_ttl=14 * 24 * 3600,  # failed jobs stay inspectable for ops
        result_ttl=24 * 3600,
        description=f"process upload {upload_id}",
    )
    return job.id
