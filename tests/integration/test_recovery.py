"""Recovery after real faults: a worker killed mid-job, Redis restarted empty, the database connection cut."""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import timedelta
from pathlib import Path

import pytest
import requests
from rq import Retry, get_current_job
from rq.job import Job

from app.config import Settings
from app.devstack.processes import free_port
from app.devstack.redis_server import start_redis
from app.domain.keys import temp_key
from app.domain.states import UploadStatus
from app.queueing import processing_job_id
from app.repository import advance
from app.services import Services
from tests import images
from tests.conftest import WEBHOOK_TOKEN, postgres_available
from tests.support import REPO, BrokerClient, own_queues, settings_env, stop_process_group
from workers import lifecycle, scheduled
from workers.context import current_services, use_services
from workers.jobs import process_upload
from workers.worker import InProcessWorker

RETRIES = (1, 1)
HEARTBEAT_EXPIRED = lifecycle.JOB_HEARTBEAT_SECONDS + lifecycle.RQ_HEARTBEAT_GRACE_SECONDS + 1


def slow_first_attempt(upload_id: str) -> str:
    """The processing job, except that its first attempt claims the upload and then hangs until killed."""
    job = get_current_job()
    services = current_services()
    services.redis.incr(f"recovery-test:attempts:{upload_id}")
    if job is not None and job.retries_left == len(RETRIES):
        with services.db.session() as session:
            advance(session, upload_id, UploadStatus.PROCESSING)
        # The work horse's pid: RQ puts the horse in a process group of its own, so the test kills it by pid.
        services.redis.set(f"recovery-test:hanging:{upload_id}", os.getpid(), ex=600)
        time.sleep(300)
    return process_upload(upload_id)


def test_the_intervals_re_run_a_killed_workers_job_within_two_minutes():
    # Kill at t: the job's last heartbeat was at most JOB_HEARTBEAT_SECONDS earlier and its registry entry
    # expires RQ's 60 s after that beat; the next recover sweep retries it, the first retry delay passes, the
    # sweep after enqueues it again.
    first_retry = Settings().job_retry_intervals[0]
    bound = (
        lifecycle.JOB_HEARTBEAT_SECONDS
        + lifecycle.RQ_HEARTBEAT_GRACE_SECONDS
        + max(lifecycle.RECOVER_EVERY_SECONDS, first_retry)
        + lifecycle.RECOVER_EVERY_SECONDS
    )
    assert bound <= 120 - 10  # ten seconds left for the fresh worker to pick it up
    assert scheduled.RECOVER.every_seconds == lifecycle.RECOVER_EVERY_SECONDS
    assert scheduled.RECOVER in scheduled.SWEEPS
    # A job lost with Redis is re-queued by the next reconcile once it is older than the grace.
    defaults = Settings()
    assert defaults.lost_job_after_seconds + scheduled.RECONCILE.every_seconds <= 300
    assert defaults.lost_job_after_seconds < defaults.stuck_after_seconds


def _wait(condition: Callable[[], object], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.1)


def _uploaded(alice: BrokerClient, services: Services) -> str:
    """An upload the webhook has marked `uploaded` and queued on the session queue (its job then removed)."""
    upload_id = alice.upload("avatar", "image/jpeg", images.jpeg(300, 300))
    alice.wait_status(upload_id, {"uploaded"})
    job_id = processing_job_id(upload_id)
    _wait(lambda: services.redis.exists(f"rq:job:{job_id}"), "the webhook's job")
    Job.fetch(job_id, connection=services.redis).delete()
    return upload_id


@pytest.fixture
def private_services(settings: Settings) -> Iterator[Callable[..., Services]]:
    made: list[Services] = []

    def make(**changes: object) -> Services:
        update = {**own_queues(f"{settings.queue_name}-recovery-{uuid.uuid4().hex[:6]}"), **changes}
        services = Services(settings.model_copy(update=update))
        made.append(services)
        return services

    yield make
    for services in made:
        services.queue.delete(delete_jobs=True)
        services.db.dispose()


def _worker(settings: Settings) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--without-scheduler"],
        env=settings_env(settings),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,  # its own process group: the kill takes the work horse too
    )


def test_a_job_whose_worker_was_killed_is_re_run_once_by_the_recover_sweep(alice, services, private_services):
    upload_id = _uploaded(alice, services)
    own = private_services(job_retry_intervals=RETRIES)
    job = own.queue.enqueue(
        f"{__name__}.slow_first_attempt",
        upload_id,
        job_id=processing_job_id(upload_id),
        retry=Retry(max=len(RETRIES), interval=list(RETRIES)),
        job_timeout=600,
    )
    first = _worker(own.settings)
    try:
        _wait(lambda: own.redis.exists(f"recovery-test:hanging:{upload_id}"), "the first attempt to hang")
        horse = int(own.redis.get(f"recovery-test:hanging:{upload_id}"))
        os.killpg(first.pid, signal.SIGKILL)  # the worker, and its work horse (its own process group)
        os.kill(horse, signal.SIGKILL)
        first.wait(10)
    finally:
        stop_process_group(first)
    assert alice.status(upload_id).json()["status"] == "processing"
    assert job.get_status() == "started"  # RQ still believes it runs

    # Its heartbeat has not expired yet: the sweep leaves it alone (a live worker's job looks just the same).
    assert lifecycle.recover_jobs(own).actions == []

    # A minute passes (the registry entry is aged by what the heartbeat would have covered): abandoned.
    started_key = own.queue.started_job_registry.key
    for entry in own.redis.zrange(started_key, 0, -1):
        own.redis.zincrby(started_key, -HEARTBEAT_EXPIRED, entry)
    shown = subprocess.run(
        [sys.executable, "-m", "app.cli", "queues", "--queue", own.queue.name, "--json"],
        env=settings_env(own.settings),
        cwd=REPO,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert shown.returncode == 0, shown.stderr
    report_json = json.loads(shown.stdout)
    [depths] = report_json["queues"]
    assert (depths["started"], depths["abandoned"]) == (0, 1)
    [abandoned] = report_json["abandoned"]
    assert (abandoned["job_id"], abandoned["upload_id"]) == (job.id, upload_id)
    assert abandoned["worker"] == Job.fetch(job.id, connection=own.redis).worker_name != "?"

    # The recover sweep hands it back to RQ: retried after its retry delay, then enqueued by the next run.
    report = lifecycle.recover_jobs(own)
    assert [(a["outcome"], a["upload_id"]) for a in report.actions] == [("recovered", upload_id)]
    enqueued: list[dict] = []
    _wait(
        lambda: enqueued.extend(lifecycle.recover_jobs(own).actions) or enqueued,
        "the retry to be enqueued",
        timeout=30,
    )
    assert [(a["outcome"], a["upload_id"]) for a in enqueued] == [("retry_enqueued", upload_id)]

    fresh = _worker(own.settings)
    try:
        alice.wait_status(upload_id, {"ready"}, timeout=90)
    finally:
        stop_process_group(fresh)
    assert own.redis.get(f"recovery-test:attempts:{upload_id}") == b"2"  # one killed, one that finished
    assert Job.fetch(job.id, connection=own.redis).get_status() == "finished"
    media = alice.media(upload_id)
    assert media.status_code == 200
    # Nothing left for a later sweep to do twice.
    assert lifecycle.recover_jobs(own, at=time.time() + HEARTBEAT_EXPIRED).actions == []


@pytest.fixture
def empty_redis(logs_dir: Path) -> Iterator[str]:
    """A private redis-server, so "Redis restarted empty" can be FLUSHALL without touching anyone else."""
    url, process = start_redis(logs_dir)
    yield url
    process.stop()


def _webhook(api_url: str, bucket: str, upload_id: str) -> requests.Response:
    """The S3 event for the upload, as the webhook-token sender posts it."""
    record = {"eventName": "ObjectCreated:Post", "s3": {"bucket": {"name": bucket}, "object": {}}}
    record["s3"]["object"]["key"] = temp_key(upload_id)
    return requests.post(
        f"{api_url}/v1/events/s3",
        json={"Records": [record]},
        headers={"Authorization": f"Bearer {WEBHOOK_TOKEN}"},
        timeout=30,
    )


def _stored(client: BrokerClient) -> str:
    ticket = client.ticket("avatar", "image/jpeg", images.jpeg(200, 200))
    assert client.post_to_store(ticket, images.jpeg(200, 200)).status_code in (200, 201, 204)
    return str(ticket["upload_id"])


def test_an_upload_whose_job_vanished_with_redis_is_requeued_by_the_next_reconcile(
    alice, settings, services, serve_with, database_url, empty_redis
):
    # A stack of its own (database, Redis, queue): the reconcile below sees only this upload.
    own = {"database_url": database_url, "redis_url": empty_redis, **own_queues("recovery")}
    api = serve_with(**own)
    client = BrokerClient(api.url, alice.token)
    upload_id = _stored(client)
    assert _webhook(api.url, settings.s3_bucket, upload_id).status_code < 300
    assert client.status(upload_id).json()["status"] == "uploaded"
    assert api.services.queue.count == 1

    api.services.redis.flushall()  # Redis restarted with nothing
    # Just queued (the webhook's enqueue may still be landing): left alone for the grace.
    kept = lifecycle.reconcile(api.services).as_dict()
    assert kept["actions"] == [] and kept["errors"] == 0
    assert api.services.queue.count == 0

    after_grace = Services(settings.model_copy(update={**own, "lost_job_after_seconds": 1}))
    assert after_grace.settings.stuck_after_seconds == 1800
    time.sleep(1.5)  # past the 1 s grace (a lower bound only: a slower machine waits longer, never shorter)
    report = lifecycle.reconcile(after_grace).as_dict()
    requeued = [a for a in report["actions"] if a["stage"] == "reconcile_stuck"]
    assert [(a["outcome"], a["upload_id"], a["previous_job"]) for a in requeued] == [
        ("requeued", upload_id, "none")
    ]
    use_services(after_grace)  # the in-process worker below runs jobs against this stack
    try:
        InProcessWorker([after_grace.queue], connection=after_grace.redis).work(
            burst=True, with_scheduler=False
        )
    finally:
        use_services(services)
        after_grace.db.dispose()
    assert client.status(upload_id).json()["status"] == "ready"


class CuttableProxy:
    """A TCP proxy on 127.0.0.1 in front of PostgreSQL that the test can cut (every connection reset)."""

    def __init__(self, target: tuple[str, int]) -> None:
        self.target = target
        self.port = free_port()
        self.up = True
        self._conns: list[socket.socket] = []
        self._lock = threading.Lock()
        self._server = socket.create_server(("127.0.0.1", self.port))
        self._server.settimeout(0.2)
        self._running = True
        self._thread = threading.Thread(target=self._accept, daemon=True)
        self._thread.start()

    def _accept(self) -> None:
        while self._running:
            try:
                client, _ = self._server.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.up:
                client.close()
                continue
            upstream = socket.create_connection(self.target, timeout=5)
            upstream.settimeout(None)
            with self._lock:
                self._conns += [client, upstream]
            for a, b in ((client, upstream), (upstream, client)):
                threading.Thread(target=self._pipe, args=(a, b), daemon=True).start()

    @staticmethod
    def _pipe(source: socket.socket, sink: socket.socket) -> None:
        try:
            while data := source.recv(65536):
                sink.sendall(data)
        except OSError:
            pass
        finally:
            for sock in (source, sink):
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)

    def cut(self) -> None:
        self.up = False
        with self._lock:
            for sock in self._conns:
                with contextlib.suppress(OSError):
                    sock.shutdown(socket.SHUT_RDWR)
            self._conns.clear()

    def restore(self) -> None:
        self.up = True

    def close(self) -> None:
        self._running = False
        self.cut()
        self._server.close()
        self._thread.join(5)


@pytest.mark.skipif(not postgres_available(), reason="needs the PostgreSQL server the CI job provides")
def test_a_cut_database_connection_answers_503_and_the_retry_succeeds(
    settings, serve_with, alice, services, caplog
):
    proxy = CuttableProxy(("127.0.0.1", 5432))
    try:
        proxied = settings.database_url.replace("127.0.0.1:5432", f"127.0.0.1:{proxy.port}")
        assert proxied != settings.database_url
        api = serve_with(database_url=proxied)
        client = BrokerClient(api.url, alice.token)
        upload_id = _stored(client)
        alice.wait_status(upload_id, {"uploaded"})  # the session's API took the event; this one replays it

        def webhook() -> requests.Response:
            return _webhook(api.url, settings.s3_bucket, upload_id)

        assert webhook().status_code < 300  # the connection pool holds a live connection
        proxy.cut()
        for answer in (webhook(), client.request_ticket("avatar", "image/jpeg", 1000)):
            assert answer.status_code == 503, answer.text
            assert answer.json()["error"]["code"] == "service_unavailable"
            assert int(answer.headers["Retry-After"]) > 0
        errors = [r for r in caplog.records if r.getMessage().startswith("database unavailable")]
        assert errors and all(r.levelname == "ERROR" and r.exc_info is None for r in errors)

        proxy.restore()
        assert webhook().status_code < 300
        assert client.request_ticket("avatar", "image/jpeg", 1000).status_code == 201
    finally:
        proxy.close()


def test_due_retries_are_enqueued_once_without_any_worker_scheduler(private_services):
    # As after a Redis blip that stopped every worker's scheduler thread: nothing but the sweep moves them.
    own = private_services()
    due = own.queue.enqueue_in(timedelta(seconds=0), "time.sleep", 0)
    later = own.queue.enqueue_in(timedelta(hours=1), "time.sleep", 0)
    first = lifecycle.recover_jobs(own).actions
    second = lifecycle.recover_jobs(own).actions
    assert [(a["outcome"], a["job"]) for a in first] == [("retry_enqueued", due.id)]
    assert second == []
    assert own.queue.get_job_ids() == [due.id]
    assert own.queue.scheduled_job_registry.get_job_ids() == [later.id]
