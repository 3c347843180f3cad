"""`broker worker` runs jobs in its own process (`workers.worker.InProcessWorker`), and keeps what the forked
work horse gave: heartbeats for a running job, job timeouts, a worker that goes on after a job's failure. Its
processing attempts share a sandbox process (`workers.sandbox_host`), which a job timeout and the worker's
exit both end."""

from __future__ import annotations

import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from redis import ConnectionPool, Redis
from redis.connection import Connection
from rq import Queue

from app.config import Settings
from tests.support import REPO, own_queues, settings_env
from workers.worker import InProcessWorker


def report_pid(key: str, sleep: float = 0.0) -> int:
    """A job: records the pid it runs in, then sleeps."""
    from workers.context import current_services

    current_services().redis.set(key, os.getpid(), ex=600)
    time.sleep(sleep)
    return os.getpid()


def _sandbox_pid(seconds: float) -> int:
    time.sleep(seconds)
    return os.getpid()


def sandboxed_pid(key: str, seconds: float = 0.0) -> int:
    """A job: one processing attempt in the worker's sandbox process; records that process's pid."""
    from workers.context import current_services
    from workers.sandbox import ProcessLimits
    from workers.sandbox_host import run_attempt

    limits = ProcessLimits(5, 64 * 1024 * 1024, wall_seconds=120, attempts_per_process=10)
    pid = run_attempt(_sandbox_pid, seconds, limits=limits)
    current_services().redis.set(key, pid, ex=600)
    return int(pid)


def _alive(pid: int) -> bool:
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except OSError:
        return False
    return state != "Z"


@pytest.fixture
def queue(settings: Settings, services) -> Iterator[tuple[Queue, Settings]]:
    own = settings.model_copy(update=own_queues(f"speed-{uuid.uuid4().hex[:6]}"))
    queue = Queue(own.queue_name, connection=services.redis)
    yield queue, own
    queue.delete(delete_jobs=True)


def _worker(settings: Settings, *args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--without-scheduler", *args],
        env=settings_env(settings),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _drain(settings: Settings, seconds: float) -> subprocess.Popen[bytes]:
    """A `--burst` worker run until it exits on its own (status 0) within `seconds`; killed otherwise."""
    worker = _worker(settings, "--burst")
    try:
        assert worker.wait(seconds) == 0
    finally:
        if worker.poll() is None:
            worker.kill()
    return worker


def test_jobs_run_in_the_worker_process_and_a_timeout_still_stops_one(queue, services):
    queue, own = queue
    key = f"speed-test:{uuid.uuid4().hex}"
    slow = queue.enqueue("time.sleep", 60, job_timeout=1)
    first = queue.enqueue(f"{__name__}.report_pid", f"{key}:1")
    second = queue.enqueue(f"{__name__}.report_pid", f"{key}:2")
    worker = _drain(own, 60)
    assert slow.get_status(refresh=True) == "failed"
    assert "JobTimeoutException" in (slow.latest_result().exc_string or "")
    # The worker went on after the timed-out job, and ran the next ones itself: no work horse per job.
    assert services.redis.get(f"{key}:1") == services.redis.get(f"{key}:2") == str(worker.pid).encode()
    assert first.get_status(refresh=True) == second.get_status(refresh=True) == "finished"


def test_a_running_job_is_kept_alive_by_heartbeats(queue, services):
    queue, own = queue
    key = f"speed-test:{uuid.uuid4().hex}"
    job = queue.enqueue(f"{__name__}.report_pid", key, 8, job_timeout=600)
    worker = _worker(own)
    try:
        deadline = time.monotonic() + 60
        while not services.redis.exists(key):
            assert time.monotonic() < deadline
            time.sleep(0.05)
        registry = queue.started_job_registry.key
        [(_, first_expiry)] = services.redis.zrange(registry, 0, -1, withscores=True)
        # The entry expires a minute after the last beat, not after the job's 600 s timeout…
        assert first_expiry - time.time() < 120
        time.sleep(6.5)  # …and a beat (every 5 s) pushed it further while the job runs.
        [(_, later_expiry)] = services.redis.zrange(registry, 0, -1, withscores=True)
        assert later_expiry > first_expiry + 3
        deadline = time.monotonic() + 30
        while job.get_status(refresh=True) != "finished":
            assert time.monotonic() < deadline
            time.sleep(0.1)
        assert services.redis.zcard(registry) == 0  # no beat re-registered the finished job
    finally:
        worker.terminate()
        worker.wait(30)


def test_the_worker_class_beats_with_the_forking_workers_ttl(services):
    worker = InProcessWorker([Queue("unused", connection=services.redis)], connection=services.redis)
    job = Queue("unused", connection=services.redis).create_job("time.sleep", args=(0,), timeout=600)
    assert worker.get_heartbeat_ttl(job) == worker.job_monitoring_interval + 60


def test_attempts_share_one_sandbox_process_until_a_timeout_or_the_worker_ends_it(queue, services):
    queue, own = queue
    key = f"speed-test:{uuid.uuid4().hex}"
    for n in (1, 2):
        queue.enqueue(f"{__name__}.sandboxed_pid", f"{key}:{n}")
    stuck = queue.enqueue(f"{__name__}.sandboxed_pid", f"{key}:stuck", 60, job_timeout=2)
    queue.enqueue(f"{__name__}.sandboxed_pid", f"{key}:after")
    worker = _drain(own, 90)
    first, second, after = (int(services.redis.get(f"{key}:{n}")) for n in (1, 2, "after"))
    assert first == second != worker.pid  # one sandbox process, not the worker, served both attempts
    assert stuck.get_status(refresh=True) == "failed"  # the job timeout stopped it…
    assert after != first  # …and killed its sandbox process: the next attempt got a new one
    assert not _alive(first)
    assert not _alive(after)  # the worker ended its sandbox process when it exited


def test_a_beat_that_would_not_move_the_workers_expiry_is_skipped(services):
    worker = InProcessWorker([Queue("unused", connection=services.redis)], connection=services.redis)
    worker.register_birth()
    try:
        worker.heartbeat()
        beaten = services.redis.hget(worker.key, "last_heartbeat")
        assert worker.worker_ttl + 55 <= services.redis.ttl(worker.key) <= worker.worker_ttl + 60
        worker.heartbeat()  # a moment later: would not move the expiry, so not sent
        assert services.redis.hget(worker.key, "last_heartbeat") == beaten
        worker.heartbeat(worker.worker_ttl + 600)  # a later expiry is always written
        assert services.redis.hget(worker.key, "last_heartbeat") != beaten
        assert services.redis.ttl(worker.key) > worker.worker_ttl + 500
    finally:
        worker.register_death()


class _CountingConnection(Connection):
    sent = 0

    def send_packed_command(self, *args: Any, **kwargs: Any) -> None:
        _CountingConnection.sent += 1
        super().send_packed_command(*args, **kwargs)


def test_a_job_costs_the_worker_about_ten_redis_round_trips(settings: Settings):
    redis = Redis(
        connection_pool=ConnectionPool.from_url(settings.redis_url, connection_class=_CountingConnection)
    )
    queue = Queue(f"speed-{uuid.uuid4().hex[:6]}", connection=redis)
    try:
        jobs = [queue.enqueue("builtins.len", "photo") for _ in range(50)]
        worker = InProcessWorker([queue], connection=redis)
        _CountingConnection.sent = 0
        assert worker.work(burst=True, with_scheduler=False)
        assert all(job.get_status(refresh=True) == "finished" for job in jobs)
        # ~10 per job, and the worker's start and end; RQ's own loop sent ~20 per job (three worker beats
        # of three commands each between two jobs).
        assert _CountingConnection.sent / len(jobs) <= 12
    finally:
        queue.delete(delete_jobs=True)
        redis.close()
