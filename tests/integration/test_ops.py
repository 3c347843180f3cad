"""`broker queues` and `broker failed …`, run as the real command line against real queues and real jobs.

The failing job fails for real: a worker whose store endpoint does not answer. The Redis database is shared
by the session, so assertions pick out this test's jobs, and private queues get unique names.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator

import pytest
from rq import Queue, Worker
from rq.registry import FailedJobRegistry

from app.devstack.processes import free_port
from app.queueing import processing_job_id
from app.services import Services
from tests import images
from tests.support import REPO, settings_env
from workers import context
from workers.worker import InProcessWorker


@pytest.fixture
def broker(settings):
    """Run `python -m app.cli ARGS…`; returns the finished process (stdout, stderr, returncode)."""

    def run(*args: str, input: str | None = None) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            env=settings_env(settings),
            cwd=REPO,
            input=input,
            capture_output=True,
            text=True,
            timeout=60,
        )

    return run


def ok_json(result: subprocess.CompletedProcess[str]):
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


@pytest.fixture
def private_queues(services) -> Iterator[Callable[[], Queue]]:
    """Makes queues of this test's own; deleted afterwards with every job and registry entry."""
    made: list[Queue] = []

    def make() -> Queue:
        made.append(Queue(f"ops-test-{uuid.uuid4().hex[:8]}", connection=services.redis))
        return made[-1]

    yield make
    for queue in made:
        for registry in (queue.failed_job_registry, queue.finished_job_registry, queue.started_job_registry):
            # StartedJobRegistry has no `remove` (its entries are executions): drop jobs and keys directly.
            for job_id in registry.get_job_ids(cleanup=False):
                services.redis.delete(f"rq:job:{job_id}")
            services.redis.delete(registry.key)
        queue.delete(delete_jobs=True)


def run_until_failed(services: Services, worker_services: Services, job_id: str, on_wait) -> None:
    """Work the upload queue with `worker_services` (scheduler included, so delayed retries come due)
    until `job_id` has exhausted its retries."""
    failed = FailedJobRegistry(queue=services.queue)
    context.use_services(worker_services)
    try:
        deadline = time.monotonic() + 25
        while job_id not in failed and time.monotonic() < deadline:
            InProcessWorker([services.queue], connection=services.redis).work(burst=True, with_scheduler=True)
            if job_id not in failed:
                on_wait()
                time.sleep(0.2)
    finally:
        context.use_services(services)
    assert job_id in failed


def test_a_failed_upload_is_listed_retried_and_ends_ready(alice, services, settings, drain, broker):
    upload_id = alice.upload("avatar", "image/jpeg", images.jpeg(400, 300))
    alice.wait_status(upload_id, {"uploaded"})
    job_id = processing_job_id(upload_id)
    nowhere = f"http://127.0.0.1:{free_port()}"
    unreachable = Services(
        settings.model_copy(update={"s3_endpoint_url": nowhere, "s3_internal_endpoint_url": nowhere})
    )
    seen_scheduled: list[int] = []

    def look_while_retry_waits() -> None:  # a retry is waiting for its time: `queues` must show it
        if not seen_scheduled:
            report = ok_json(broker("queues", "--queue", settings.queue_name, "--json"))
            seen_scheduled.append(report["queues"][0]["scheduled"])

    try:
        run_until_failed(services, unreachable, job_id, look_while_retry_waits)
    finally:
        unreachable.db.dispose()

    assert seen_scheduled and seen_scheduled[0] >= 1
    assert alice.status(upload_id).json()["status"] == "failed"

    listed = {job["job_id"]: job for job in ok_json(broker("failed", "list", "--json"))}
    assert listed[job_id]["upload_id"] == upload_id
    assert listed[job_id]["queue"] == settings.queue_name
    assert listed[job_id]["failed_at"]
    assert "EndpointConnectionError" in listed[job_id]["error"]

    table = broker("failed", "list")
    assert table.returncode == 0, table.stderr
    assert job_id in table.stdout and upload_id in table.stdout and "EndpointConnectionError" in table.stdout

    depths = ok_json(broker("queues", "--json"))["queues"]
    uploads = next(queue for queue in depths if queue["queue"] == settings.queue_name)
    assert uploads["failed"] == len(FailedJobRegistry(queue=services.queue)) >= 1

    retried = broker("failed", "retry", job_id)
    assert retried.returncode == 0, retried.stderr
    assert "re-queued 1 job(s)" in retried.stdout
    assert job_id in services.queue.get_job_ids()
    assert job_id not in FailedJobRegistry(queue=services.queue)

    drain()  # a healthy worker: failed → processing → ready, end to end

    status = alice.status(upload_id).json()
    assert status["status"] == "ready", status
    assert "error" not in status
    assert services.queue.count == 0


def test_retry_needs_ids_or_all_and_reports_unknown_ids(broker):
    unknown = broker("failed", "retry", "process-no-such-job", "--json")
    assert unknown.returncode == 1
    assert json.loads(unknown.stdout) == {"retried": [], "not_failed": ["process-no-such-job"]}

    assert broker("failed", "retry").returncode == 2  # usage error: nothing named


def test_retry_all_then_purge_with_confirmation(private_queues, services, broker):
    private_queue = private_queues()
    job = private_queue.enqueue("builtins.int", "not a number", failure_ttl=600)
    worker = InProcessWorker([private_queue], connection=services.redis)
    worker.work(burst=True, with_scheduler=False)  # ValueError: a real failure

    [listed] = ok_json(broker("failed", "list", "--queue", private_queue.name, "--json"))
    assert listed["job_id"] == job.id
    assert listed["upload_id"] is None  # not an upload job
    assert listed["error"].startswith("ValueError")

    retried = ok_json(broker("failed", "retry", "--all", "--queue", private_queue.name, "--json"))
    assert retried == {"retried": [job.id], "not_failed": []}
    assert (private_queue.count, len(private_queue.failed_job_registry)) == (1, 0)
    worker.work(burst=True, with_scheduler=False)  # fails again
    assert job.id in private_queue.failed_job_registry

    declined = broker("failed", "purge", "--queue", private_queue.name, input="n\n")
    assert declined.returncode == 1  # aborted
    assert "Delete 1 failed job(s)" in declined.stderr
    assert job.id in private_queue.failed_job_registry

    purged = ok_json(broker("failed", "purge", "--queue", private_queue.name, "--yes", "--json"))
    assert purged == {"purged": [job.id]}
    assert len(private_queue.failed_job_registry) == 0
    assert not services.redis.exists(job.key)


def test_queues_shows_depths_workers_and_the_job_each_runs(private_queues, services, settings, broker):
    private_queue, running = private_queues(), private_queues()
    waiting = [private_queue.enqueue("time.sleep", 0) for _ in range(2)]
    # Runs until the test stops the worker (cold shutdown below): still running whatever the machine's load.
    job = running.enqueue("time.sleep", 120, job_timeout=180)
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--without-scheduler"],
        env=settings_env(settings, BROKER_QUEUE_NAME=running.name),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    try:
        deadline = time.monotonic() + 60
        while job.get_status() != "started" and time.monotonic() < deadline:
            time.sleep(0.05)
        assert job.get_status() == "started", "the worker did not start the job"

        report = ok_json(broker("queues", "--queue", private_queue.name, "--queue", running.name, "--json"))
        table = broker("queues", "--queue", private_queue.name, "--queue", running.name)

        depths = {queue["queue"]: queue for queue in report["queues"]}
        assert depths[private_queue.name]["queued"] == private_queue.count == len(waiting)
        assert depths[running.name]["started"] == 1
        [busy] = [w for w in report["workers"] if running.name in w["queues"]]
        assert busy["state"] == "busy"
        assert busy["current_job_id"] == job.id
        assert busy["pid"] == worker.pid
        assert table.returncode == 0, table.stderr
        assert busy["name"] in table.stdout and job.id in table.stdout
    finally:
        # A second SIGTERM is RQ's cold shutdown: the busy work horse is killed and the worker unregisters.
        worker.terminate()
        time.sleep(1)
        worker.terminate()
        worker.wait(30)
    assert not [w for w in Worker.all(connection=services.redis) if running.name in w.queue_names()]


def test_each_kind_of_processing_has_its_queue_and_a_worker_takes_only_the_queues_it_is_given(
    private_queues, services, settings, broker
):
    report = ok_json(broker("queues", "--json"))
    by_name = {queue["queue"]: queue for queue in report["queues"]}
    expected = {
        settings.queue_name: ("image", settings.job_timeout_seconds),
        settings.document_queue_name: ("pdf", settings.document_job_timeout_seconds),
        settings.video_queue_name: ("video", settings.video_job_timeout_seconds),
    }
    for name, (processing, timeout) in expected.items():
        assert (by_name[name]["processing"], by_name[name]["job_timeout_seconds"]) == (processing, timeout)

    images, videos = private_queues(), private_queues()
    photo_job, video_job = images.enqueue("time.sleep", 0), videos.enqueue("time.sleep", 0)
    worker = broker("worker", "--burst", "--without-scheduler", "--queue", videos.name)

    assert worker.returncode == 0, worker.stderr
    assert video_job.get_status() == "finished"
    assert photo_job.get_status() == "queued"  # a video worker never takes photo work
