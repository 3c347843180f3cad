"""`GET /metrics` over HTTP: counters move with what really happened, histograms fill, queue gauges match the
queues, every API process reports what every process recorded, and a metrics outage fails nothing.

Counters are shared by the whole session (they live in Redis), so each test compares before and after."""

from __future__ import annotations

import subprocess
import sys
import time
import uuid
from datetime import timedelta

import pytest
import requests
from prometheus_client.parser import text_string_to_metric_families
from rq import Queue

from app import create_app, metrics
from app.auth import mint_token
from app.devstack.processes import free_port
from app.services import Services
from tests import images
from tests.support import REPO, BrokerClient, ServedApp, settings_env
from workers.worker import InProcessWorker

Samples = dict[tuple[str, frozenset[tuple[str, str]]], float]
MiB = 1024 * 1024


def scrape(api_url: str) -> Samples:
    response = requests.get(f"{api_url}/metrics", timeout=10)
    assert response.status_code == 200
    assert response.headers["Content-Type"].startswith("text/plain; version=0.0.4")
    return {
        (sample.name, frozenset(sample.labels.items())): sample.value
        for family in text_string_to_metric_families(response.text)
        for sample in family.samples
    }


def value(samples: Samples, name: str, **labels: str) -> float:
    return samples.get((name, frozenset(labels.items())), 0.0)


def delta(before: Samples, after: Samples, name: str, **labels: str) -> float:
    return value(after, name, **labels) - value(before, name, **labels)


def post_event(api_url: str, body: dict, token: str | None) -> requests.Response:
    headers = {"Authorization": f"Bearer {token}"} if token else {}
    return requests.post(f"{api_url}/v1/events/s3", json=body, headers=headers, timeout=10)


def test_a_ticket_an_upload_a_duplicate_and_a_rejection_move_the_counters(
    api, alice, drain, services, settings
):
    before = scrape(api.url)

    good = alice.upload("food_image", "image/jpeg", images.jpeg(640, 480))
    bad = alice.upload("food_image", "image/jpeg", b"<!doctype html><html></html>" * 20)
    for upload_id in (good, bad):
        alice.wait_status(upload_id, {"uploaded"})  # delivered by SNS
    queued, queued_in_redis = scrape(api.url), services.queue.count
    record = {"eventName": "ObjectCreated:Post", "s3": {"bucket": {"name": settings.s3_bucket}}}
    record["s3"]["object"] = {"key": f"temp%2F{good}"}
    assert post_event(api.url, {"Records": [record]}, settings.webhook_token).json()["outcomes"] == [
        "duplicate"
    ]
    assert post_event(api.url, {"Records": [record]}, "wrong-token").status_code == 401
    assert alice.request_ticket("food_image", "image/jpeg", 11 * MiB).status_code == 413
    assert alice.request_ticket("food_image", "image/gif", 100).status_code == 415
    drain()
    after = scrape(api.url)

    assert (
        value(queued, "broker_queue_jobs", queue=settings.queue_name, state="queued") == queued_in_redis >= 2
    )
    assert value(after, "broker_queue_jobs", queue=settings.queue_name, state="queued") == 0
    assert delta(before, after, "broker_tickets_issued_total", kind="food_image") == 2
    assert delta(before, after, "broker_tickets_refused_total", code="too_large") == 1
    assert delta(before, after, "broker_tickets_refused_total", code="unsupported_type") == 1
    assert delta(before, after, "broker_events_total", source="sns", outcome="queued") == 2
    assert delta(before, after, "broker_events_total", source="webhook", outcome="duplicate") == 1
    assert delta(before, after, "broker_events_total", source="webhook", outcome="refused") == 1
    assert delta(before, after, "broker_jobs_total", stage="promote", outcome="ready", code="") == 1
    assert (
        delta(before, after, "broker_jobs_total", stage="sniff", outcome="rejected", code="type_mismatch")
        == 1
    )
    # Whole attempts, by outcome: one observation each, with a positive duration.
    for outcome in ("ready", "rejected"):
        assert delta(before, after, "broker_job_duration_seconds_count", outcome=outcome) == 1
        assert delta(before, after, "broker_job_duration_seconds_sum", outcome=outcome) > 0
        assert value(after, "broker_job_duration_seconds_bucket", outcome=outcome, le="+Inf") == value(
            after, "broker_job_duration_seconds_count", outcome=outcome
        )
    # Completed stages: both jobs were fetched; only the good one got past sniffing.
    stage_count = "broker_job_stage_duration_seconds_count"
    assert delta(before, after, stage_count, stage="fetch") == 2
    for stage in ("sniff", "image", "promote"):
        assert delta(before, after, stage_count, stage=stage) == 1
    # What the decoding cost in the sandbox: only the good one reached the image processing.
    cpu = "broker_processing_cpu_seconds"
    assert delta(before, after, f"{cpu}_count", processing="image", outcome="ready") == 1
    assert delta(before, after, f"{cpu}_sum", processing="image", outcome="ready") > 0
    assert delta(before, after, f"{cpu}_count", processing="image", outcome="rejected") == 0


def test_queue_gauges_match_the_queues(api, services):
    queue = Queue(f"metrics-test-{uuid.uuid4().hex[:8]}", connection=services.redis)
    try:
        for _ in range(3):
            queue.enqueue("time.sleep", 0)
        queue.enqueue_in(timedelta(hours=1), "time.sleep", 0)
        failing = queue.enqueue("builtins.int", "x", at_front=True)
        InProcessWorker([queue], connection=services.redis).work(burst=True, max_jobs=1)  # runs `failing`

        samples = scrape(api.url)

        def gauge(state: str) -> float:
            return value(samples, "broker_queue_jobs", queue=queue.name, state=state)

        assert failing.id in queue.failed_job_registry
        assert gauge("queued") == queue.count == 3
        assert gauge("scheduled") == len(queue.scheduled_job_registry) == 1
        assert gauge("failed") == len(queue.failed_job_registry) == 1
        assert gauge("started") == gauge("deferred") == 0
        assert value(samples, "broker_metrics_store_up") == 1
    finally:
        for registry in (queue.failed_job_registry, queue.scheduled_job_registry):
            for job_id in registry.get_job_ids():
                registry.remove(job_id, delete_job=True)
        queue.delete(delete_jobs=True)


def test_every_api_process_reports_what_every_process_recorded(api, alice, services, settings):
    other_api = ServedApp(create_app(services=Services(settings)))  # another API process, its own clients
    try:
        before = scrape(other_api.url)
        upload_id = alice.upload("avatar", "image/jpeg", images.jpeg(300, 300))
        alice.wait_status(upload_id, {"uploaded"})
        worker = subprocess.run(  # a worker in a process of its own
            [sys.executable, "-m", "app.cli", "worker", "--burst", "--without-scheduler"],
            env=settings_env(settings),
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=60,
        )
        assert worker.returncode == 0, worker.stderr[-2000:]
        assert alice.status(upload_id).json()["status"] == "ready"

        # The first API first: its scrape delivers its own pending counts (the ticket) at once.
        seen_by_first, seen_by_other = scrape(api.url), scrape(other_api.url)
    finally:
        other_api.stop()

    assert delta(before, seen_by_other, "broker_tickets_issued_total", kind="avatar") == 1
    assert delta(before, seen_by_other, "broker_jobs_total", stage="promote", outcome="ready", code="") == 1
    counters = {
        key: v for key, v in seen_by_other.items() if key[0].startswith("broker_") and "_total" in key[0]
    }
    assert counters and all(value == seen_by_first.get(key) for key, value in counters.items())


def test_a_metrics_outage_fails_no_request_and_no_job(settings, serve_with):
    served = serve_with(redis_url=f"redis://127.0.0.1:{free_port()}/0")
    started = time.monotonic()
    client = BrokerClient(served.url, mint_token(settings.jwt_secret or "", str(uuid.uuid4())))
    ticket = client.request_ticket("avatar", "image/jpeg", 1000)
    assert ticket.status_code == 201, ticket.text
    assert time.monotonic() - started < 5

    metrics.job_started(served.services)
    metrics.job_stage("fetch")
    metrics.job_finished("ready")  # nothing raised

    text = requests.get(f"{served.url}/metrics", timeout=10)
    assert text.status_code == 200
    assert value(scrape(served.url), "broker_metrics_store_up") == 0


def test_deployments_sharing_a_redis_keep_their_own_counts(api, settings, serve_with, services):
    """Two namespaces on one Redis: tickets issued through one are not counted by the other."""
    other = serve_with(redis_namespace=f"{settings.redis_namespace}-other")
    client = BrokerClient(other.url, mint_token(settings.jwt_secret or "", str(uuid.uuid4())))
    mine_before, other_before = scrape(api.url), scrape(other.url)
    for _ in range(3):
        assert client.request_ticket("avatar", "image/jpeg", 1000).status_code == 201
    mine_after, other_after = scrape(api.url), scrape(other.url)
    assert delta(other_before, other_after, "broker_tickets_issued_total", kind="avatar") == 3
    assert delta(mine_before, mine_after, "broker_tickets_issued_total", kind="avatar") == 0
    assert services.redis.exists(f"{settings.redis_namespace}-other:metrics:broker_tickets_issued")


@pytest.fixture(autouse=True)
def _uploads_queue_left_empty(services):
    yield
    assert services.queue.count == 0
