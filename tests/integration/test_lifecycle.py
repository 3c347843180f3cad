"""Lifecycle over real interfaces: reconcile recovers lost S3 events and lost jobs, the clean-up frees only
garbage, the food-recognition hook marks uploads, and both sweeps are RQ cron jobs and `broker` commands.

Each test gets its own bucket (with no S3 → SNS wiring: every event is "lost"), its own migrated database
(SQLite, and PostgreSQL when it answers) and its own RQ queue on the session's Redis, served by its own API
over HTTP — so the sweeps see only what the test made, and the session's `uploads` queue is never touched.
"""

from __future__ import annotations

import json
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from click.testing import CliRunner
from rq import Queue
from rq.cron import CronScheduler
from rq.exceptions import NoSuchJobError
from rq.job import Job, JobStatus
from sqlalchemy import update

from app import create_app
from app.auth import mint_token
from app.cli import main as broker_main
from app.cli_lifecycle import parse_duration
from app.config import Settings
from app.devstack.local_s3 import LocalS3, create_bucket
from app.domain.kinds import Processing
from app.domain.states import UploadStatus
from app.intake import queue_upload
from app.models import Upload
from app.queueing import enqueue_processing, processing_job_id
from app.repository import advance, get_upload
from app.services import Services
from tests import images
from tests.support import REPO, BrokerClient, ServedApp, own_queues, settings_env
from workers import cleanup, context, lifecycle
from workers.hooks import food_recognition_job_id
from workers.worker import InProcessWorker

S = UploadStatus

# --- food-recognition jobs the hook is pointed at (run in-process by the test worker) ----------------------
recognized: list[tuple[str, str, str]] = []


def recognize_food(upload_id: str, key: str, url: str) -> dict[str, list[str]]:
    recognized.append((upload_id, key, url))
    return {"labels": ["salad"]}


def recognize_food_broken(upload_id: str, key: str, url: str) -> None:
    raise RuntimeError("food recognition service unavailable")


# --- a broker of the test's own -----------------------------------------------------------------------------
@dataclass
class Stack:
    settings: Settings
    services: Services
    api: ServedApp
    session_services: Services

    def client(self) -> BrokerClient:
        return BrokerClient(self.api.url, mint_token(self.settings.jwt_secret or "", str(uuid.uuid4())))

    @property
    def queue(self) -> Queue:
        return self.services.queue

    def drain(self) -> None:
        """Run every job of this stack's queue with a real RQ worker, against this stack's services."""
        context.use_services(self.services)
        try:
            InProcessWorker([self.queue], connection=self.services.redis).work(
                burst=True, with_scheduler=False
            )
        finally:
            context.use_services(self.session_services)

    def record(self, upload_id: str) -> Upload:
        with self.services.db.session() as session:
            upload = get_upload(session, upload_id)
        assert upload is not None
        return upload

    def move(self, upload_id: str, *states: UploadStatus) -> None:
        for state in states:
            with self.services.db.session() as session:
                assert advance(session, upload_id, state), (upload_id, state)

    def age_ticket(self, upload_id: str) -> None:
        """As if the ticket's 10 minutes had passed."""
        with self.services.db.session() as session:
            session.execute(
                update(Upload)
                .where(Upload.id == upload_id)
                .values(ticket_expires_at=datetime.now(UTC) - timedelta(minutes=1))
            )

    def temp_exists(self, upload_id: str) -> bool:
        return self.services.storage.head(f"temp/{upload_id}") is not None

    def env(self) -> dict[str, str]:
        """The environment of a `broker` process configured exactly like this stack."""
        return settings_env(self.settings)

    def broker(self, *args: str, timeout: float = 30) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "app.cli", *args],
            cwd=REPO,
            env=self.env(),
            capture_output=True,
            text=True,
            timeout=timeout,
        )


def purge_queue(queue: Queue) -> None:
    """Remove the queue, its registries and its jobs from the shared Redis."""
    registries = (
        queue.failed_job_registry,
        queue.finished_job_registry,
        queue.started_job_registry,
        queue.scheduled_job_registry,
        queue.deferred_job_registry,
        queue.canceled_job_registry,
    )
    for registry in registries:
        for job_id in registry.get_job_ids():
            with suppress(NoSuchJobError):
                Job.fetch(job_id, connection=queue.connection).delete()
    queue.delete(delete_jobs=True)


@pytest.fixture
def make_stack(settings: Settings, services: Services, local_s3: LocalS3, database_url: str) -> Iterator[Any]:
    stacks: list[Stack] = []

    def make(**overrides: Any) -> Stack:
        bucket = f"lifecycle-{uuid.uuid4().hex[:8]}"
        create_bucket(local_s3, bucket)  # no S3 → SNS wiring: the store reports nothing
        own = settings.model_copy(
            update={
                "s3_bucket": bucket,
                "database_url": database_url,
                **own_queues(f"lifecycle-{uuid.uuid4().hex[:8]}"),
                "sns_topic_arn": None,
                "reconcile_after_seconds": 0,
                "stuck_after_seconds": 0,
                **overrides,
            }
        )
        own_services = Services(own)
        stack = Stack(own, own_services, ServedApp(create_app(services=own_services)), services)
        stacks.append(stack)
        return stack

    yield make
    for stack in stacks:
        stack.api.stop()
        purge_queue(stack.queue)
        stack.services.db.dispose()


@pytest.fixture
def stack(make_stack: Any) -> Stack:
    return make_stack()


@contextmanager
def services_with(stack: Stack, **overrides: Any) -> Iterator[Services]:
    """The stack's services with other settings (e.g. longer thresholds)."""
    other = Services(stack.settings.model_copy(update=overrides))
    try:
        yield other
    finally:
        other.db.dispose()


def stored_upload(client: BrokerClient, kind: str = "food_image", **extra: Any) -> str:
    """Ticket + direct upload to the store; with no wiring, the upload stays `pending`."""
    upload_id = client.upload(kind, "image/jpeg", images.jpeg(640, 480), **extra)
    assert client.status(upload_id).json()["status"] == "pending"
    return upload_id


def ticket_only(client: BrokerClient) -> str:
    return str(client.ticket("avatar", "image/jpeg", images.jpeg(64, 64))["upload_id"])


def acted(report: lifecycle.SweepReport, outcome: str) -> set[str]:
    return {a["upload_id"] or a["key"] for a in report.actions if a["outcome"] == outcome}


# --- (1) a lost webhook does not lose an upload -------------------------------------------------------------
def test_lost_webhook_does_not_lose_an_upload(stack: Stack):
    alice = stack.client()
    lost = stored_upload(alice)
    late = stored_upload(alice, kind="food_image")
    stack.age_ticket(late)
    stack.move(late, S.EXPIRED)  # the ticket expired before anyone saw the object

    with services_with(stack, reconcile_after_seconds=300) as patient:
        assert lifecycle.reconcile(patient).actions == []  # young objects are left to the webhook
    dry = lifecycle.reconcile(stack.services, dry_run=True)
    assert acted(dry, "would_queue") == {lost, late}
    assert stack.queue.count == 0

    report = lifecycle.reconcile(stack.services)

    assert acted(report, "queued") == {lost, late}
    assert alice.status(lost).json()["status"] == "uploaded"
    assert stack.queue.count == 2
    assert lifecycle.reconcile(stack.services).actions == []  # a second sweep queues nothing twice
    stack.drain()
    assert alice.status(lost).json()["status"] == "ready"
    assert alice.status(late).json()["status"] == "ready"
    assert not stack.temp_exists(lost)
    assert lifecycle.reconcile(stack.services).actions == []
    assert stack.queue.count == 0


# --- (2) stuck in flight with no live job -------------------------------------------------------------------
def test_stuck_uploads_without_a_live_job_are_requeued(stack: Stack):
    alice = stack.client()
    jobless = stored_upload(alice)
    stack.move(jobless, S.UPLOADED)  # the event was seen, the job was lost (e.g. Redis restarted)
    abandoned = stored_upload(alice)
    stack.move(abandoned, S.UPLOADED, S.PROCESSING)
    enqueue_processing(stack.services.redis, stack.settings, abandoned, Processing.IMAGE)
    dead = Job.fetch(processing_job_id(abandoned), connection=stack.services.redis)
    stack.queue.remove(dead)  # its worker died on the last try: RQ moved it to `failed`
    dead.set_status(JobStatus.FAILED)
    stack.queue.failed_job_registry.add(dead, exc_string="AbandonedJobError")
    healthy = stored_upload(alice)
    assert queue_upload(stack.services, healthy, None, {}).value == "queued"

    with services_with(stack, stuck_after_seconds=1800) as patient:
        assert lifecycle.reconcile(patient).actions == []  # not stuck for long enough yet
    assert acted(lifecycle.reconcile(stack.services, dry_run=True), "would_requeue") == {jobless, abandoned}
    assert stack.queue.count == 1

    report = lifecycle.reconcile(stack.services)

    assert acted(report, "requeued") == {jobless, abandoned}
    previous = {a["upload_id"]: a["previous_job"] for a in report.actions}
    assert previous == {jobless: "none", abandoned: "failed"}
    assert report.counts["reconcile_stuck"]["kept_job_alive"] == 1  # `healthy`'s job is queued
    assert stack.queue.count == 3
    assert stack.queue.failed_job_registry.count == 0  # the dead job was replaced, not duplicated
    stack.drain()
    for upload_id in (jobless, abandoned, healthy):
        assert alice.status(upload_id).json()["status"] == "ready"
    assert stack.queue.count == 0


# --- (3) clean-up --------------------------------------------------------------------------------------------
def test_cleanup_frees_garbage_and_stale_tickets_and_keeps_work_in_flight(stack: Stack):
    alice = stack.client()
    done = stored_upload(alice)
    queue_upload(stack.services, done, None, {})
    stack.drain()
    assert alice.status(done).json()["status"] == "ready"
    leftover = stack.record(done).temp_key  # as if the pipeline's delete of temp/ had failed
    stack.services.storage.put(leftover, b"stale", "image/jpeg", "no-store", {})
    orphan = f"temp/{uuid.uuid4()}"  # never ticketed by this broker
    stack.services.storage.put(orphan, b"x", "image/jpeg", "no-store", {})
    uploaded = stored_upload(alice)
    stack.move(uploaded, S.UPLOADED)
    processing = stored_upload(alice)
    stack.move(processing, S.UPLOADED, S.PROCESSING)
    unreported = stored_upload(alice)  # event lost, waiting for reconcile; its ticket has expired too
    stack.age_ticket(unreported)
    stale_ticket = ticket_only(alice)
    stack.age_ticket(stale_ticket)
    fresh_ticket = ticket_only(alice)

    dry = cleanup.cleanup(stack.services, older_than_seconds=0, dry_run=True)
    assert acted(dry, "would_delete") == {done, orphan.removeprefix("temp/")}
    assert acted(dry, "would_expire") == {stale_ticket}
    assert stack.temp_exists(done) and alice.status(stale_ticket).json()["status"] == "pending"

    young = cleanup.cleanup(stack.services)  # default: 24 h
    assert young.counts["cleanup_temp"] == {"kept_young": 5}
    assert acted(young, "expired") == {stale_ticket}
    assert young.counts["expire_tickets"]["kept_object_present"] == 1

    old = cleanup.cleanup(stack.services, older_than_seconds=0)

    assert acted(old, "deleted") == {done, orphan.removeprefix("temp/")}
    assert old.counts["cleanup_temp"] == {"deleted": 2, "kept_in_flight": 2, "kept_awaiting_reconcile": 1}
    assert not stack.temp_exists(done)
    assert stack.services.storage.head(orphan) is None
    for upload_id in (uploaded, processing, unreported):
        assert stack.temp_exists(upload_id)
    assert alice.status(uploaded).json()["status"] == "uploaded"
    assert alice.status(processing).json()["status"] == "processing"
    assert alice.status(unreported).json()["status"] == "pending"
    assert alice.status(stale_ticket).json()["status"] == "expired"
    assert alice.status(fresh_ticket).json()["status"] == "pending"
    assert alice.status(done).json()["status"] == "ready"
    assert stack.queue.count == 0


NOW = datetime.now(UTC)
CUTOFF = NOW - timedelta(hours=24)


@pytest.mark.parametrize(
    ("status", "since", "kept_because"),
    [
        (None, None, None),
        ("ready", CUTOFF, None),
        ("rejected", CUTOFF, None),
        ("deleted", CUTOFF, None),
        ("uploaded", CUTOFF - timedelta(days=3), "in_flight"),
        ("processing", CUTOFF - timedelta(days=3), "in_flight"),
        ("pending", CUTOFF - timedelta(days=3), "awaiting_reconcile"),
        ("expired", CUTOFF - timedelta(days=3), "awaiting_reconcile"),
        ("failed", NOW, "failed_recently"),
        ("failed", CUTOFF - timedelta(seconds=1), None),
    ],
)
def test_which_old_temp_objects_are_kept(status, since, kept_because):
    assert cleanup.temp_keep_reason(status, since, CUTOFF) == kept_because


# --- (4) the food-recognition hook --------------------------------------------------------------------------
def process(stack: Stack, client: BrokerClient, kind: str) -> str:
    upload_id = stored_upload(client, kind=kind)
    assert queue_upload(stack.services, upload_id, None, {}).value == "queued"
    stack.drain()  # the processing job, then the hook job it queues
    assert client.status(upload_id).json()["status"] == "ready"
    return upload_id


def test_food_hook_runs_for_food_images_and_marks_them(make_stack: Any):
    stack = make_stack(food_recognition_job=f"{__name__}.recognize_food")
    alice = stack.client()
    recognized.clear()

    food = process(stack, alice, "food_image")
    avatar = process(stack, alice, "avatar")

    record = stack.record(food)
    assert recognized == [(food, record.final_key, alice.media(food).json()["url"])]
    assert record.ai_processed is True
    assert Job.fetch(food_recognition_job_id(food), connection=stack.services.redis).is_finished
    assert stack.record(avatar).ai_processed is False
    assert not Job.exists(food_recognition_job_id(avatar), connection=stack.services.redis)
    assert stack.queue.count == 0


def test_failing_food_hook_leaves_the_upload_ready(make_stack: Any):
    stack = make_stack(food_recognition_job=f"{__name__}.recognize_food_broken")
    alice = stack.client()

    food = process(stack, alice, "food_image")

    assert alice.status(food).json()["status"] == "ready"
    assert stack.record(food).ai_processed is False
    assert alice.media(food).status_code == 200
    hook = Job.fetch(food_recognition_job_id(food), connection=stack.services.redis)
    assert hook.is_failed
    assert stack.queue.count == 0


# --- (5) scheduling with RQ's cron, and the commands ---------------------------------------------------------
def test_scheduler_registers_every_sweep_as_an_rq_cron_job(stack: Stack):
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "scheduler"],
        cwd=REPO,
        env=stack.env(),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 20
        mine: list[CronScheduler] = []
        while time.monotonic() < deadline and not (mine and stack.queue.count == 3):
            mine = [s for s in CronScheduler.all(stack.services.redis) if s.pid == process.pid]
            time.sleep(0.1)
        assert mine, "the scheduler did not register"
        intervals = {job.func_name: job.interval for job in mine[0].get_jobs()}
        assert intervals == {
            "workers.scheduled.cleanup_temp": 3600,
            "workers.scheduled.reconcile": 120,
            "workers.scheduled.recover_jobs": 20,
        }
        assert {job.queue_name for job in mine[0].get_jobs()} == {stack.settings.queue_name}
        # interval jobs run once as soon as the scheduler starts
        queued = {job.func_name for job in stack.queue.get_jobs()}
        assert queued == {
            "workers.scheduled.cleanup_temp",
            "workers.scheduled.reconcile",
            "workers.scheduled.recover_jobs",
        }
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    assert process.returncode == 0, output
    assert not [s for s in CronScheduler.all(stack.services.redis) if s.pid == process.pid]
    cron_jobs = stack.queue.get_jobs()

    stack.drain()  # the workers run the scheduled sweeps like any job

    results = {job.func_name: job.latest_result().return_value for job in cron_jobs}
    assert results["workers.scheduled.cleanup_temp"]["sweep"] == "cleanup"
    assert results["workers.scheduled.reconcile"]["sweep"] == "reconcile"
    assert results["workers.scheduled.recover_jobs"]["sweep"] == "recover"
    assert stack.queue.count == 0
    redis = stack.services.redis
    redis.delete(f"rq:cron_scheduler:{mine[0].name}")
    for name in intervals:
        redis.zrem("rq:cron_jobs", name)
        redis.delete(f"rq:cron_job:{name}:jobs")


def test_cli_runs_the_same_sweeps(stack: Stack):
    alice = stack.client()
    lost = stored_upload(alice)

    dry = stack.broker("reconcile", "--dry-run", "--json")
    assert dry.returncode == 0, dry.stderr
    assert [(a["upload_id"], a["outcome"]) for a in json.loads(dry.stdout)["actions"]] == [
        (lost, "would_queue")
    ]
    assert alice.status(lost).json()["status"] == "pending"

    real = stack.broker("reconcile")
    assert real.returncode == 0, real.stderr
    assert "reconcile: reconcile_after_seconds=0" in real.stdout
    assert f"queued         temp/{lost}" in real.stdout
    assert '"outcome": "queued"' in real.stderr  # each action is logged as JSON on stderr
    stack.drain()
    assert alice.status(lost).json()["status"] == "ready"

    orphan = f"temp/{uuid.uuid4()}"
    stack.services.storage.put(orphan, b"x", "image/jpeg", "no-store", {})
    kept = stack.broker("cleanup-temp", "--json")  # the 24 h default: too young to delete
    assert json.loads(kept.stdout)["counts"] == {"cleanup_temp": {"kept_young": 1}}
    cleaned = stack.broker("cleanup-temp", "--older-than", "0s", "--json")
    assert cleaned.returncode == 0, cleaned.stderr
    report = json.loads(cleaned.stdout)
    assert report["settings"] == {"older_than_seconds": 0}
    assert [(a["key"], a["outcome"]) for a in report["actions"]] == [(orphan, "deleted")]
    assert stack.services.storage.head(orphan) is None
    assert stack.queue.count == 0


@pytest.mark.parametrize(
    ("text", "seconds"), [("24h", 86400), ("90m", 5400), ("3600s", 3600), ("2d", 172800), ("45", 45)]
)
def test_durations(text, seconds):
    assert parse_duration(text) == seconds


def test_a_bad_duration_is_a_usage_error():
    result = CliRunner().invoke(broker_main, ["cleanup-temp", "--older-than", "1 week"])
    assert result.exit_code == 2
    assert "not a duration" in result.output
