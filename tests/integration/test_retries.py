"""Transient failures: RQ retries the job, then the upload is `failed`; ops can retry it to `ready`.
A replayed job for a finished upload changes nothing."""

from __future__ import annotations

import time

from rq.registry import FailedJobRegistry

from app.devstack.processes import free_port
from app.domain.kinds import Processing
from app.queueing import enqueue_processing, processing_job_id
from app.services import Services
from tests import images
from workers import context
from workers.worker import InProcessWorker


def work_with(services: Services, worker_services: Services, rounds: int = 1) -> None:
    """Run queued jobs with `worker_services`, letting delayed retries come due between rounds."""
    context.use_services(worker_services)
    try:
        for round_ in range(rounds):
            if round_:
                time.sleep(1.2)  # retry intervals in the test settings are 1 s
            InProcessWorker([services.queue], connection=services.redis).work(burst=True, with_scheduler=True)
    finally:
        context.use_services(services)


def test_store_outage_is_retried_then_failed_then_recovered_by_ops(alice, services, settings):
    upload_id = alice.upload("avatar", "image/jpeg", images.jpeg(400, 300))
    alice.wait_status(upload_id, {"uploaded"})
    nowhere = f"http://127.0.0.1:{free_port()}"
    unreachable = Services(
        settings.model_copy(update={"s3_endpoint_url": nowhere, "s3_internal_endpoint_url": nowhere})
    )

    work_with(services, unreachable, rounds=len(settings.job_retry_intervals) + 1)

    status = alice.status(upload_id).json()
    assert status["status"] == "failed"
    assert status["error"]["code"] == "processing_failed"
    assert "Endpoint" in status["error"]["message"] or "connect" in status["error"]["message"].lower()
    registry = FailedJobRegistry(queue=services.queue)
    job_id = processing_job_id(upload_id)
    assert job_id in registry.get_job_ids()

    registry.requeue(job_id)  # what `broker failed retry` does
    work_with(services, services)

    recovered = alice.status(upload_id).json()
    assert recovered["status"] == "ready"
    assert "error" not in recovered


def test_a_replayed_job_for_a_ready_upload_changes_nothing(alice, services, settings, drain):
    upload_id = alice.upload("avatar", "image/jpeg", images.jpeg(400, 300))
    alice.wait_status(upload_id, {"uploaded"})
    drain()
    before = alice.status(upload_id).json()
    assert before["status"] == "ready"

    enqueue_processing(services.redis, settings, upload_id, Processing.IMAGE)
    drain()

    assert alice.status(upload_id).json() == before


def raise_unlisted(*_args: object) -> None:
    """A processing attempt that raises what no table judges (run in the sandbox, like every decoder)."""
    raise NotImplementedError("a parser's unknown branch")


CRASHED_ATTEMPTS: list[str] = []


def crashing_processor(source, mime, kind, settings, workdir):
    from workers.sandbox import ProcessLimits
    from workers.sandbox_host import run_attempt

    CRASHED_ATTEMPTS.append(str(source))
    return run_attempt(raise_unlisted, str(source), limits=ProcessLimits(5, 64 * 1024 * 1024))


def test_an_exception_no_table_judges_is_retried_once_then_failed_with_its_name(
    alice, services, settings, monkeypatch
):
    from workers import processing

    monkeypatch.setitem(processing.PROCESSORS, Processing.IMAGE, crashing_processor)
    CRASHED_ATTEMPTS.clear()
    upload_id = alice.upload("avatar", "image/jpeg", images.jpeg(400, 300))
    alice.wait_status(upload_id, {"uploaded"})
    settings_with_retries = len(settings.job_retry_intervals)
    assert settings_with_retries >= 2  # so "once" is fewer than the job's retries

    work_with(services, services, rounds=settings_with_retries + 1)

    status = alice.status(upload_id).json()
    assert status["status"] == "failed"
    assert "NotImplementedError: a parser's unknown branch" in status["error"]["message"]
    assert len(CRASHED_ATTEMPTS) == 2  # the first try and one retry, not all of them
    assert processing_job_id(upload_id) in FailedJobRegistry(queue=services.queue).get_job_ids()  # ops see it


def die_of_a_signal(*_args: object) -> None:
    """A processing attempt killed from outside (a container limit, an operator), not by its file."""
    import os
    import signal

    os.kill(os.getpid(), signal.SIGTERM)


def killed_processor(source, mime, kind, settings, workdir):
    from workers.sandbox import ProcessLimits
    from workers.sandbox_host import run_attempt

    return run_attempt(die_of_a_signal, limits=ProcessLimits(5, 64 * 1024 * 1024))


def test_the_retry_after_a_crash_processes_the_kept_file_without_fetching_it_again(
    alice, services, settings, monkeypatch
):
    from workers import processing
    from workers.stages.kept import KEPT_DIR

    real = processing.PROCESSORS[Processing.IMAGE]
    monkeypatch.setitem(processing.PROCESSORS, Processing.IMAGE, killed_processor)
    upload_id = alice.upload("avatar", "image/jpeg", images.jpeg(400, 300))
    alice.wait_status(upload_id, {"uploaded"})
    work_with(services, services)  # the first attempt: fetched, then the sandbox is killed
    assert alice.status(upload_id).json()["status"] == "processing"
    assert [path.name for path in KEPT_DIR.glob(f"{upload_id}.*")] != []

    # The temp object is gone from the store: only the kept file can make the retry succeed.
    services.storage.delete(f"temp/{upload_id}")
    monkeypatch.setitem(processing.PROCESSORS, Processing.IMAGE, real)
    work_with(services, services, rounds=2)

    assert alice.status(upload_id).json()["status"] == "ready"
    assert list(KEPT_DIR.glob(f"{upload_id}.*")) == []  # forgotten once the upload ended
