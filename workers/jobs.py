"""RQ entry points. A job takes ids, nothing else; retries are declared where the job is queued."""

from __future__ import annotations

from rq import get_current_job

from workers import pipeline
from workers.context import current_services


def process_upload(upload_id: str) -> str:
    job = get_current_job()
    # RQ decrements `retries_left` before each retry, so 0 (or no retry policy) means this is the last try.
    last_attempt = job is None or not job.retries_left
    first_attempt = job is None or job.retries_left == len(job.retry_intervals or ())
    try:
        return pipeline.run(current_services(), upload_id, last_attempt, first_attempt)
    except pipeline.GaveUp:
        if job is not None:
            job.retries_left = 0  # RQ's failure handling reads it: failed now, not retried
        raise
