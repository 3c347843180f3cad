"""The RQ worker class of `broker worker`: jobs run in the worker process itself, not in a forked work horse.

RQ's default `Worker` forks a work horse per job so that a job cannot crash or bloat the worker. Here that
isolation already exists where it matters: every decoder runs in the sandbox's limited child
(`workers.sandbox`), and a job itself only does I/O (S3, the database, Redis). The per-job fork, on the other
hand, cost most of a photo job's time: the horse imported the pipeline afresh, opened new connections to
PostgreSQL, Redis and S3, and warmed boto3 and SQLAlchemy's caches, only to throw them all away at exit.

What the work horse gave that this class keeps:

- **job timeouts**: RQ's death penalty (SIGALRM) interrupts the job in this process, exactly as it did in
  the horse; a sandbox child still running is killed by `run_limited`;
- **heartbeats**: a thread beats for the running job every `job_monitoring_interval` seconds (what the
  worker did while it waited for its horse), so a job whose worker is killed is abandoned within
  `JOB_HEARTBEAT_SECONDS` + 60 s and re-run by the recover sweep (`workers.lifecycle`). A job stuck past its
  timeout + 60 s (the death penalty could not interrupt it) stops the beats and ends the process, as the
  worker killed a stuck horse: the job is then abandoned and recovered;
- **shutdown**: the first SIGINT/SIGTERM lets the running job finish (warm); the second (cold) stops it and
  leaves it `started`, as killing the horse did, so the recover sweep re-runs it instead of it counting as a
  failed attempt.

What it leaves out is RQ's repeated worker bookkeeping between two jobs. RQ's loop beats for the worker after
each job, before each dequeue and after it: three times within a few milliseconds, three Redis round trips
each, to push an expiry that lasts minutes. Here a beat is one round trip, and one that would not move the
expiry by more than `_BEAT_SLACK_SECONDS` is skipped; a state the worker already has is not written again.
That takes a job's Redis round trips in RQ from ~20 to ~10.
"""

from __future__ import annotations

import contextlib
import logging
import os
import threading
import time
from collections.abc import Callable
from datetime import timedelta
from types import FrameType
from typing import Any

from redis.client import Pipeline
from rq import SimpleWorker
from rq.executions import Execution
from rq.job import Job
from rq.queue import Queue
from rq.utils import now
from rq.worker.base import BaseWorker, WorkerStatus

from workers.outage import REDIS_DOWN, Outage

log = logging.getLogger(__name__)

_STUCK_GRACE_SECONDS = 60  # beyond the job timeout, as RQ's horse monitor allows before it kills the horse
# A worker's key lives for minutes (`worker_ttl` + 60 s) and RQ beats well before it runs out; a beat that
# would extend it by less than this is not worth a round trip.
_BEAT_SLACK_SECONDS = 1.0
_COMMAND_POLL_SECONDS = 1.0


class InProcessWorker(SimpleWorker):
    """`SimpleWorker` with the forking worker's heartbeats, stuck-job handling and cold shutdown."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._beats: _Heartbeats | None = None
        self._cold_shutdown = False
        self._key_alive_until = 0.0  # monotonic: when the worker's key expires, as the last beat set it

    def subscribe(self) -> None:
        # RQ's command channel (`rq` stop/kill commands) is read by a thread that waits 60 s per poll, and
        # redis-py (8.x) joins that thread when the worker stops: every stop took up to a minute. A 1 s poll
        # costs one idle round trip per second and makes a stop prompt.
        self.pubsub = self.connection.pubsub()
        self.pubsub.subscribe(**{self.pubsub_channel_name: self.handle_payload})
        self.pubsub_thread = self.pubsub.run_in_thread(
            sleep_time=_COMMAND_POLL_SECONDS, daemon=True, exception_handler=self._pubsub_exception_handler
        )

    def heartbeat(self, timeout: int | None = None, pipeline: Pipeline | None = None) -> None:
        timeout = timeout or self.worker_ttl + 60
        alive_until = time.monotonic() + timeout
        if pipeline is not None:  # part of a bigger write: costs no round trip of its own
            super().heartbeat(timeout, pipeline=pipeline)
        elif alive_until - self._key_alive_until < _BEAT_SLACK_SECONDS:
            return
        else:
            with self.connection.pipeline(transaction=False) as own:
                own.hexists(self.key, "birth")
                super().heartbeat(timeout, pipeline=own)
                registered = own.execute()[0]
            if not registered:
                self._register_again()
        self._key_alive_until = alive_until

    def _register_again(self) -> None:
        """Redis lost this worker's registration (it restarted empty): without it, a working worker would be
        invisible (`broker_workers` 0, `broker queues`) until it restarted. Same name, same state."""
        log.warning(
            "Redis had lost this worker's registration; registered again",
            extra={"stage": "worker", "worker": self.name},
        )
        self.connection.delete(self.key)  # the beat's own field, on a key with no birth
        self.register_birth()

    @property
    def stop_was_requested(self) -> bool:
        return self._shutdown_requested_date is not None or self._stop_requested

    def set_state(self, state: str, pipeline: Pipeline | None = None) -> None:
        if pipeline is None and state == self.get_state():
            return  # nobody else writes a worker's state
        super().set_state(state, pipeline=pipeline)

    def get_heartbeat_ttl(self, job: Job, working_time: float = 0.0) -> int:
        # SimpleWorker keeps a job's registry entry for its whole timeout (no one beats for it); with the
        # beating thread the short TTL of the forking worker applies, so a dead worker's job is found soon.
        return BaseWorker.get_heartbeat_ttl(self, job, working_time)

    def execute_job(self, job: Job, queue: Queue) -> None:
        execution = self.prepare_execution(job)
        self._beats = _Heartbeats(self, job, execution)
        self._beats.start()
        try:
            self.perform_job(job, queue, execution)
        finally:
            self._stop_beats()
        # Idle again, and the beat RQ's loop sends next, in one round trip.
        with self.connection.pipeline(transaction=False) as pipeline:
            self.set_state(WorkerStatus.IDLE, pipeline=pipeline)
            self.heartbeat(pipeline=pipeline)
            pipeline.execute()

    def handle_execution_ended(self, job: Job, queue: Queue, heartbeat_ttl: int) -> None:
        # The first step of RQ's success and failure handling: no beat may re-register the job after it.
        self._stop_beats()
        if self._cold_shutdown:
            # Stopped by a cold shutdown: leave the job `started`, as a killed horse did; its registry entry
            # expires and the recover sweep re-runs it. Not a failed attempt of the upload.
            raise SystemExit()
        super().handle_execution_ended(job, queue, heartbeat_ttl)

    def request_force_stop(self, signum: int, frame: FrameType | None) -> None:
        self._cold_shutdown = self.get_state() == WorkerStatus.BUSY
        if self._cold_shutdown and self._shutdown_requested_date is not None:
            # RQ ignores a second signal within 1 s of the first (a worker pool's duplicate). There is no pool
            # here, and the job runs in this process: its interrupted sleep or I/O makes the first handler
            # run late as often as the second, so an operator's second signal must always count.
            self._shutdown_requested_date -= timedelta(seconds=1)
        super().request_force_stop(signum, frame)  # raises SystemExit
        self._cold_shutdown = False

    def _stop_beats(self) -> None:
        if self._beats is not None:
            self._beats.stop()
            self._beats = None


class _Heartbeats(threading.Thread):
    """Beats for one running job until stopped; ends the process if the job outlives its timeout."""

    def __init__(self, worker: InProcessWorker, job: Job, execution: Execution) -> None:
        super().__init__(name=f"heartbeat-{job.id}", daemon=True)
        self.worker, self.job, self.execution = worker, job, execution
        self._stopped = threading.Event()
        self._lock = threading.Lock()  # held while beating, so stop() returns only after the last beat

    def run(self) -> None:
        interval = self.worker.job_monitoring_interval
        while not self._stopped.wait(interval):
            with self._lock:
                if self._stopped.is_set():
                    return
                if self._stuck():
                    log.error(
                        "job stuck past its timeout; worker exits so the job is recovered",
                        extra={"stage": "worker", "job_id": self.job.id, "outcome": "stuck"},
                    )
                    os._exit(70)
                try:
                    self.worker.maintain_heartbeats(self.job, self.execution)
                except Exception:  # a Redis blip: the next beat may succeed; the job goes on meanwhile
                    log.warning(
                        "heartbeat failed", extra={"stage": "worker", "job_id": self.job.id}, exc_info=True
                    )

    def _stuck(self) -> bool:
        timeout = self.job.timeout
        if not timeout or timeout < 0 or self.job.started_at is None:
            return False
        return (now() - self.job.started_at).total_seconds() > timeout + _STUCK_GRACE_SECONDS

    def stop(self) -> None:
        self._stopped.set()
        with self._lock:
            pass


def work_through_outages(
    make_worker: Callable[[str | None], InProcessWorker], burst: bool, scheduler: bool
) -> None:
    """Run a worker until it is asked to stop, whatever Redis does meanwhile.

    RQ's loop quits on a Redis error it does not expect (a timeout, or a connection lost while a job's result
    is written): the process would exit and stay gone. Here a loop that ended without a stop request starts
    again, under the same name, once Redis answers; the job it was finishing is recovered by the recover sweep
    (its registry entry expires with its heartbeats). `make_worker(name)` builds the worker (None: a new name).
    """
    outage = Outage("worker", "Redis", log)
    name: str | None = None
    while True:
        rq_worker = make_worker(name)
        name = rq_worker.name
        with contextlib.suppress(*REDIS_DOWN):  # its teardown's own writes, when Redis is what went
            rq_worker.work(burst=burst, with_scheduler=scheduler)
        if burst or rq_worker.stop_was_requested:
            return
        log.warning(
            "worker loop ended on an error; starting it again", extra={"stage": "worker", "worker": name}
        )
        _wait_for_redis(rq_worker, outage)
        with contextlib.suppress(*REDIS_DOWN):
            rq_worker.register_death()  # the stale registration, so the same name may register again


def _wait_for_redis(rq_worker: InProcessWorker, outage: Outage) -> None:
    while True:
        try:
            rq_worker.connection.ping()
        except REDIS_DOWN as error:
            time.sleep(outage.failed(error))
            continue
        outage.recovered()
        return
