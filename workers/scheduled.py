"""RQ entry points of the lifecycle sweeps, and their schedule — RQ's own cron, not a hand-written loop.

`broker scheduler` runs one `rq.cron.CronScheduler` with the jobs in `SWEEPS`: it enqueues `cleanup_temp`
and `reconcile` on the upload queue at their intervals (and once at start), and the ordinary workers run
them. `broker cleanup-temp` and `broker reconcile` call the same functions in-process, so a sweep run by hand
is exactly the scheduled one.

Several schedulers may run (one per host, for availability): RQ's CronScheduler elects no leader, so each
holds a lease in Redis (`LEASE_SECONDS`, renewed on every pass) and only the holder enqueues; another takes
over within a lease once the holder is gone. The sweeps are idempotent anyway, and a Redis lock per sweep
makes an overlapping run (a slow run, a hand-run during a scheduled one) skip.

The scheduler outlives Redis outages: a stalled or restarting Redis makes it wait with backoff and try
again (logged once when the outage begins and once when it ends), never exit. It keeps its name, and
registers again when Redis has lost its registration.
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from typing import Any

from redis.exceptions import LockError
from rq import Queue
from rq.cron import CronJob, CronScheduler
from rq.exceptions import StopRequested

from app.config import Settings
from app.queueing import processing_queues, redis_connection
from app.services import Services
from workers import cleanup, lifecycle
from workers.context import current_services
from workers.outage import REDIS_DOWN, Outage

log = logging.getLogger(__name__)

RESULT_TTL = 24 * 3600  # each run's summary stays readable (`rq` / `broker queues`) for a day
FAILURE_TTL = 14 * 24 * 3600  # as for processing jobs: failures stay inspectable for ops


def cleanup_temp(older_than_seconds: int | None = None, dry_run: bool = False) -> dict[str, Any]:
    """Delete garbage temp objects and expire stale tickets (see `workers.cleanup.cleanup`)."""
    services = current_services()
    with _exclusive(services, "cleanup", CLEANUP.timeout_seconds, dry_run) as acquired:
        if not acquired:
            return _skipped("cleanup")
        return cleanup.cleanup(services, older_than_seconds, dry_run).as_dict()


def reconcile(dry_run: bool = False) -> dict[str, Any]:
    """Queue uploads whose S3 event or job was lost (see `workers.lifecycle.reconcile`)."""
    services = current_services()
    with _exclusive(services, "reconcile", RECONCILE.timeout_seconds, dry_run) as acquired:
        if not acquired:
            return _skipped("reconcile")
        return lifecycle.reconcile(services, dry_run).as_dict()


def recover_jobs(dry_run: bool = False) -> dict[str, Any]:
    """Hand jobs whose worker died, and due retries, back to RQ (see `workers.lifecycle.recover_jobs`)."""
    services = current_services()
    with _exclusive(services, "recover", RECOVER.timeout_seconds, dry_run) as acquired:
        if not acquired:
            return _skipped("recover")
        return lifecycle.recover_jobs(services, dry_run).as_dict()


@dataclass(frozen=True)
class Sweep:
    func: Callable[..., dict[str, Any]]
    every_seconds: int
    timeout_seconds: int


# Temp objects live 24 h by default; checking hourly keeps them at most ~25 h and costs one listing.
CLEANUP = Sweep(cleanup_temp, every_seconds=3600, timeout_seconds=1800)
# A lost event delays an upload by reconcile_after_seconds plus at most this interval; a sweep that finds
# nothing lost costs one listing of temp/ and one query.
RECONCILE = Sweep(reconcile, every_seconds=120, timeout_seconds=600)
# A job whose worker died is re-run within 2 minutes (the arithmetic is in `workers.lifecycle`).
RECOVER = Sweep(recover_jobs, every_seconds=lifecycle.RECOVER_EVERY_SECONDS, timeout_seconds=60)
SWEEPS = (CLEANUP, RECONCILE, RECOVER)


def register_sweeps(scheduler: CronScheduler, queue_name: str) -> list[CronJob]:
    """Register every sweep as an interval cron job on `queue_name` (the queue the workers listen to)."""
    return [
        scheduler.register(
            sweep.func,
            queue_name,
            interval=sweep.every_seconds,
            job_timeout=sweep.timeout_seconds,
            # A run still queued when the next is due is superseded by it, so a worker outage does not pile up
            # a backlog of identical sweeps.
            ttl=sweep.every_seconds,
            result_ttl=RESULT_TTL,
            failure_ttl=FAILURE_TTL,
        )
        for sweep in SWEEPS
    ]


def run_scheduler(settings: Settings) -> None:
    """Run RQ's cron scheduler with the sweeps until SIGTERM/SIGINT (it unregisters itself on the way out)."""
    connection = redis_connection(settings)
    retry_queues = [
        Queue(target.name, connection=connection) for target in processing_queues(settings).values()
    ]
    scheduler = LeasedCronScheduler(f"{settings.redis_namespace}:scheduler:lease", connection, retry_queues)
    register_sweeps(scheduler, settings.queue_name)
    scheduler.start()


LEASE_SECONDS = 90  # longer than the longest pass (RQ sleeps at most 60 s between passes)
_FOLLOWER_PASS_SECONDS = 10  # how often a scheduler without the lease looks whether it is free
# The leader moves due retries back onto their queues this often (a few round trips), so a retry runs on time
# even while every worker's own RQ scheduler thread is down (after a Redis outage, say).
_RETRY_PASS_SECONDS = 1.0
_RENEW = """
if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('expire', KEYS[1], ARGV[2]) end
return redis.call('set', KEYS[1], ARGV[1], 'NX', 'EX', ARGV[2]) and 1 or 0
"""


class LeasedCronScheduler(CronScheduler):
    """RQ's cron scheduler, enqueueing only while it holds the lease, and living through Redis outages."""

    def __init__(self, lease_key: str, connection: Any, retry_queues: list[Queue]) -> None:
        super().__init__(connection=connection)
        self.lease_key = lease_key
        self.retry_queues = retry_queues
        self._renew = connection.register_script(_RENEW)
        self._registered = False
        self._outage = Outage("scheduler", "Redis", log)

    def holds_lease(self) -> bool:
        """Take the lease if it is free, renew it if it is ours; whether it is ours now."""
        return bool(self._renew(keys=[self.lease_key], args=[self.name, LEASE_SECONDS]))

    def start(self) -> None:
        self.log.info("CronScheduler %s: starting...", self.name)
        self._install_signal_handlers()
        try:
            while True:
                time.sleep(self._pass())
        except (KeyboardInterrupt, StopRequested):
            self.log.info("CronScheduler %s: stop requested", self.name)
        finally:
            with suppress(*REDIS_DOWN):
                self.register_death()
                self.connection.eval(_RELEASE, 1, self.lease_key, self.name)
            self.log.info("CronScheduler %s: shutdown complete", self.name)

    def _pass(self) -> float:
        """One pass: enqueue what is due (as the leader) and beat; the seconds until the next pass."""
        try:
            if not self._registered:
                self.register_birth()
                self._registered = True
            leading = self.holds_lease()
            if leading:
                if self.enqueue_jobs():
                    self.save()
                for queue in self.retry_queues:
                    lifecycle.enqueue_due_retries(queue)
            self.heartbeat()
        except REDIS_DOWN as error:
            return self._outage.failed(error)
        self._outage.recovered()
        if not leading:
            return _FOLLOWER_PASS_SECONDS
        return min(self.calculate_sleep_interval(), _RETRY_PASS_SECONDS)


_RELEASE = "if redis.call('get', KEYS[1]) == ARGV[1] then return redis.call('del', KEYS[1]) end return 0"


@contextmanager
def _exclusive(services: Services, sweep: str, timeout: int, dry_run: bool) -> Iterator[bool]:
    """One real run of a sweep at a time across all workers; dry runs change nothing and need no lock.

    The lock expires with the job timeout, so a run killed mid-way never blocks the next for longer.
    """
    if dry_run:
        yield True
        return
    lock = services.redis.lock(f"{services.settings.redis_namespace}:lifecycle:{sweep}", timeout=timeout)
    acquired = bool(lock.acquire(blocking=False))
    try:
        yield acquired
    finally:
        if acquired:
            with suppress(LockError):  # expired meanwhile: the run outlasted its timeout
                lock.release()


def _skipped(sweep: str) -> dict[str, Any]:
    log.info(f"{sweep}: skipped", extra={"stage": sweep, "outcome": "skipped_running_elsewhere"})
    return {"sweep": sweep, "skipped": "another run holds the lock"}
