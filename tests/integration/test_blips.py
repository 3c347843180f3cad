"""Long-running processes live through Redis outages: a real `broker worker` and two real `broker scheduler`s
on a redis-server of the test's own, which is stopped (SIGSTOP) and restarted empty under them."""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
from redis import Redis
from rq import Queue, Worker

from app.config import Settings
from app.devstack.processes import free_port, port_answers
from tests.support import REPO, settings_env, stop_process_group

pytestmark = pytest.mark.skipif(shutil.which("redis-server") is None, reason="needs redis-server")


class OwnRedis:
    """A redis-server on a fixed port that can be stopped, continued, and restarted empty."""

    def __init__(self, log_dir: Path) -> None:
        self.port, self.log_dir = free_port(), log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.start()

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        argv = [
            "redis-server",
            "--bind",
            "127.0.0.1",
            "--port",
            str(self.port),
            "--save",
            "",
            "--appendonly",
            "no",
        ]
        self.process = subprocess.Popen(argv, stdout=subprocess.DEVNULL, cwd=self.log_dir)
        wait_until(lambda: port_answers("127.0.0.1", self.port), 10, "redis-server did not start")

    def signal(self, sig: int) -> None:
        assert self.process is not None
        os.kill(self.process.pid, sig)

    def stop(self) -> None:
        if self.process is not None:
            self.process.kill()
            self.process.wait(10)
            self.process = None


def wait_until(condition: Callable[[], object], seconds: float, message: str) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, message
        time.sleep(0.1)


@pytest.fixture
def own_redis(tmp_path: Path) -> Iterator[OwnRedis]:
    redis = OwnRedis(tmp_path)
    yield redis
    redis.signal(signal.SIGCONT)
    redis.stop()


def broker(settings: Settings, redis_url: str, *args: str, log: Path) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", *args],
        env=settings_env(settings, BROKER_REDIS_URL=redis_url),
        cwd=REPO,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        start_new_session=True,
    )


def finished(queue: Queue, job_id: str) -> bool:
    try:
        job = queue.fetch_job(job_id)
        return job is not None and job.get_status(refresh=True) == "finished"
    except Exception:  # Redis is still coming back
        return False


def test_a_worker_lives_through_a_stall_as_a_job_ends_and_a_restart_that_forgets_it(
    settings, own_redis, tmp_path
):
    queue_name = f"blips-{uuid.uuid4().hex[:8]}"
    log = tmp_path / "worker.log"
    worker = broker(settings, own_redis.url, "worker", "--without-scheduler", "--queue", queue_name, log=log)
    connection = Redis.from_url(own_redis.url)
    queue = Queue(queue_name, connection=connection)
    try:
        wait_until(lambda: len(Worker.all(connection=connection)) == 1, 30, "the worker never registered")
        name = Worker.all(connection=connection)[0].name
        # A job of 3 s; Redis stalls as it ends, for longer than the client's 5 s socket timeout.
        queue.enqueue("time.sleep", 3, job_id="during-the-stall")
        wait_until(lambda: connection.zcard(queue.started_job_registry.key) == 1, 30, "the job never started")
        own_redis.signal(signal.SIGSTOP)
        time.sleep(12)
        own_redis.signal(signal.SIGCONT)
        queue.enqueue("time.sleep", 0, job_id="after-the-stall")
        wait_until(
            lambda: finished(queue, "after-the-stall"), 60, f"no job ran after the stall:\n{log.read_text()}"
        )
        assert worker.poll() is None, log.read_text()

        # Redis goes away as the next job ends, for longer than the client's retries, and comes back empty:
        # every key gone, the worker's registration included.
        queue.enqueue("time.sleep", 3, job_id="during-the-outage")
        wait_until(lambda: connection.zcard(queue.started_job_registry.key) == 1, 30, "the job never started")
        own_redis.stop()
        time.sleep(25)
        own_redis.start()
        wait_until(
            lambda: [w.name for w in Worker.all(connection=connection)] == [name],
            60,
            f"the worker did not register again under its name:\n{log.read_text()}",
        )
        queue.enqueue("time.sleep", 0, job_id="after-the-restart")
        wait_until(lambda: finished(queue, "after-the-restart"), 60, log.read_text())
        assert worker.poll() is None
        text = log.read_text()
        assert text.count("Redis unreachable; worker keeps trying") <= 2  # once per outage, not per try
    finally:
        stop_process_group(worker)


def test_two_schedulers_enqueue_each_sweep_once_and_both_live_through_a_stall(settings, own_redis, tmp_path):
    namespace = f"blips-{uuid.uuid4().hex[:8]}"
    queue_name = f"{namespace}-uploads"
    started = [
        broker(
            settings.model_copy(update={"queue_name": queue_name, "redis_namespace": namespace}),
            own_redis.url,
            "scheduler",
            log=tmp_path / f"scheduler-{n}.log",
        )
        for n in (1, 2)
    ]
    connection = Redis.from_url(own_redis.url)
    queue = Queue(queue_name, connection=connection)
    try:
        wait_until(lambda: queue.count >= 3, 30, "the sweeps were never enqueued")
        time.sleep(3)  # the other scheduler's first pass, had it enqueued too
        functions = sorted(job.func_name for job in queue.jobs)
        assert functions == [
            "workers.scheduled.cleanup_temp",
            "workers.scheduled.reconcile",
            "workers.scheduled.recover_jobs",
        ]
        # A retry due in a second, with no worker (and so no worker's RQ scheduler) running: the scheduler
        # puts it back on its queue on time.
        retry = queue.enqueue_in(timedelta(seconds=1), "time.sleep", 0)
        due = time.monotonic() + 1
        wait_until(lambda: retry.id in queue.job_ids, 10, "the due retry was not put back on its queue")
        assert time.monotonic() - due < 3

        own_redis.signal(signal.SIGSTOP)
        time.sleep(12)
        own_redis.signal(signal.SIGCONT)
        time.sleep(3)
        for n, scheduler in enumerate(started, 1):
            assert scheduler.poll() is None, (tmp_path / f"scheduler-{n}.log").read_text()
    finally:
        for scheduler in started:
            stop_process_group(scheduler)
