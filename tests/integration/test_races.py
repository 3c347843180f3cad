"""Requests that race apply fully or not at all (issue 22, section 5), on PostgreSQL, over real HTTP.

Each round sends the racing requests at the same moment (a barrier, one thread each) to an API of the test's
own — its own bucket with no S3 → SNS wiring, so the only event is the one the test sends, its own queues on
the session's Redis, the session's PostgreSQL — and then checks what the user sees: one consistent final
state, no 5xx, nothing lost (a live upload is queued and processed), nothing doubled (one job, one verdict).
"""

from __future__ import annotations

import os
import signal
import threading
import time
import uuid
from collections import Counter
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
import requests
from rq import Queue

from app import create_app
from app.config import Settings
from app.devstack.local_s3 import LocalS3, create_bucket
from app.devstack.redis_server import start_redis
from app.domain.multipart import MiB
from app.queueing import processing_job_id
from app.services import Services
from tests import images
from tests.conftest import WEBHOOK_TOKEN, client_for, postgres_available
from tests.support import BrokerClient, ServedApp, own_queues
from workers import context
from workers.worker import InProcessWorker

pytestmark = pytest.mark.skipif(not postgres_available(), reason="the races are run on PostgreSQL")

ROUNDS = 30


@dataclass
class Stack:
    services: Services
    api: ServedApp
    session_services: Services

    def client(self) -> BrokerClient:
        return client_for(self.api)  # a user per round: no rate limit, no avatar supersession across rounds

    @property
    def queues(self) -> list[Queue]:
        return list(self.services.processing_queues)

    def queued_ids(self) -> list[str]:
        return [job_id for queue in self.queues for job_id in queue.get_job_ids()]

    def drain(self) -> None:
        context.use_services(self.services)
        try:
            InProcessWorker(self.queues, connection=self.services.redis).work(
                burst=True, with_scheduler=False
            )
        finally:
            context.use_services(self.session_services)

    def event(self, upload_id: str) -> requests.Response:
        return post_event(self.api.url, self.services.settings.s3_bucket, upload_id)

    def temp_exists(self, upload_id: str) -> bool:
        return self.services.storage.head(f"temp/{upload_id}") is not None


def post_event(api_url: str, bucket: str, upload_id: str) -> requests.Response:
    """The upload's S3 event, as the direct-webhook sender posts it."""
    record = {
        "eventName": "ObjectCreated:Post",
        "s3": {"bucket": {"name": bucket}, "object": {"key": f"temp%2F{upload_id}"}},
    }
    headers = {"Authorization": f"Bearer {WEBHOOK_TOKEN}"}
    return requests.post(f"{api_url}/v1/events/s3", json={"Records": [record]}, headers=headers, timeout=30)


def own_settings(settings: Settings, local_s3: LocalS3, name: str, **changes: Any) -> Settings:
    bucket = f"{name}-{uuid.uuid4().hex[:8]}"
    create_bucket(local_s3, bucket)  # no S3 → SNS wiring: the store reports nothing by itself
    queues = own_queues(f"{settings.queue_name}-{name}-{uuid.uuid4().hex[:6]}")
    return settings.model_copy(update={"s3_bucket": bucket, **queues, **changes})


@pytest.fixture(scope="module")
def stack(settings: Settings, services: Services, local_s3: LocalS3) -> Iterator[Stack]:
    own = Services(own_settings(settings, local_s3, "races"))
    api = ServedApp(create_app(services=own))
    yield Stack(own, api, services)
    api.stop()
    for queue in own.processing_queues:
        queue.delete(delete_jobs=True)
    own.close()


def at_once(*calls: Callable[[], requests.Response], stagger: float = 0.0) -> list[requests.Response]:
    """Run the calls on threads released together, so their requests reach the API at the same moment (or,
    with `stagger`, the later ones that many seconds after the first: a spread of offsets lets every
    interleaving of the two requests' steps happen, not only the one the fastest path favours)."""
    barrier = threading.Barrier(len(calls))

    def run(indexed: tuple[int, Callable[[], requests.Response]]) -> requests.Response:
        index, call = indexed
        barrier.wait()
        if index:
            time.sleep(stagger)
        return call()

    with ThreadPoolExecutor(len(calls)) as pool:
        return list(pool.map(run, enumerate(calls)))


def error_code(response: requests.Response) -> str:
    return str(response.json()["error"]["code"])


# --- DELETE racing the upload's event --------------------------------------------------------------------
def test_a_cancel_racing_the_event_either_wins_cleanly_or_changes_nothing(stack):
    """The event and a duplicate of it race the owner's DELETE. Either the DELETE wins (204: `deleted`, temp
    object gone, both events find nothing to do) or the event does (409 `upload_in_progress`: nothing
    deleted, one job, the upload becomes `ready`). Before the fix 4 of 30 rounds ended `missing_object`."""
    photo = images.jpeg(64, 64)
    rounds = []
    for _ in range(ROUNDS):
        client = stack.client()
        upload_id = client.upload("avatar", "image/jpeg", photo)
        cancel, event, duplicate = at_once(
            lambda: client.cancel(upload_id),  # noqa: B023 - called before the loop moves on
            lambda: stack.event(upload_id),  # noqa: B023
            lambda: stack.event(upload_id),  # noqa: B023
        )
        assert {cancel.status_code, event.status_code, duplicate.status_code} <= {200, 204, 409}, (
            cancel.text,
            event.text,
            duplicate.text,
        )
        outcomes = sorted(event.json()["outcomes"] + duplicate.json()["outcomes"])
        if cancel.status_code == 204:
            assert outcomes == ["duplicate", "duplicate"]
            assert client.status(upload_id).json()["status"] == "deleted"
            assert not stack.temp_exists(upload_id)
        else:
            assert error_code(cancel) == "upload_in_progress", cancel.text
            assert outcomes == ["duplicate", "queued"]  # one of the two queued it, the other found it queued
            assert stack.temp_exists(upload_id)  # the losing DELETE touched nothing
        rounds.append((client, upload_id, cancel.status_code))

    queued = stack.queued_ids()
    assert len(queued) == len(set(queued)), "a job was queued twice"
    assert set(queued) == {processing_job_id(u) for _, u, answer in rounds if answer == 409}
    stack.drain()
    finals = Counter()
    for client, upload_id, answer in rounds:
        status = client.status(upload_id).json()
        finals[status["status"]] += 1
        if answer == 204:
            assert status["status"] == "deleted", status
            assert client.media(upload_id).status_code == 404
        else:
            assert status["status"] == "ready", status  # never `missing_object`
            assert client.media(upload_id).status_code == 200
            assert client.cancel(upload_id).status_code == 204  # and now it can be deleted
    print(f"DELETE vs event over {ROUNDS} rounds: {dict(finals)}")


# --- multipart completion racing a cancel ----------------------------------------------------------------
def test_a_completion_racing_a_cancel_either_completes_or_is_cancelled_never_a_500(stack):
    """`complete` and DELETE at the same moment: exactly one applies. Completed → DELETE 409, the object
    stored, one job queued; cancelled → `complete` 409 `upload_closed`, nothing stored, no parts left open,
    no job. Before the fix `complete` could meet the aborted upload and answer 500."""
    data = images.jpeg(64, 64) + os.urandom(6 * MiB)  # one part: a resumable ticket of one 6 MiB part
    winners = Counter()
    for round_number in range(ROUNDS):
        client = stack.client()
        ticket = client.ticket(
            "workout_photo", "image/jpeg", data, context={"workout_id": "w"}, resumable=True
        )
        upload_id = ticket["upload_id"]
        assert ticket["upload"]["method"] == "MULTIPART"
        etags = client.put_parts(ticket, data, range(1, ticket["upload"]["part_count"] + 1))
        done, cancel = at_once(
            lambda: client.complete(upload_id, etags),  # noqa: B023
            lambda: client.cancel(upload_id),  # noqa: B023
            stagger=(round_number % 10) * 0.005,  # completing lists the parts first: let it get ahead
        )
        assert done.status_code in (202, 409), done.text
        assert cancel.status_code in (204, 409), cancel.text
        open_uploads = {item.key for item in stack.services.storage.list_temp_multipart_uploads()}
        status = client.status(upload_id).json()["status"]
        if done.status_code == 202:
            assert cancel.status_code == 409 and error_code(cancel) == "upload_in_progress"
            assert done.json()["status"] == status == "uploaded"
            assert stack.temp_exists(upload_id)
            assert stack.queued_ids().count(processing_job_id(upload_id)) == 1
            winners["completed"] += 1
        else:
            assert cancel.status_code == 204, cancel.text
            assert error_code(done) == "upload_closed"
            assert status == "deleted"
            assert not stack.temp_exists(upload_id)
            assert processing_job_id(upload_id) not in stack.queued_ids()
            winners["cancelled"] += 1
        assert f"temp/{upload_id}" not in open_uploads
    for queue in stack.queues:
        queue.empty()  # the completed uploads' jobs: counted above, not processed here
    print(f"complete vs DELETE over {ROUNDS} rounds: {dict(winners)}")


# --- the webhook while the queue is down -----------------------------------------------------------------
@pytest.fixture
def stoppable_redis(logs_dir: Path) -> Iterator[tuple[str, int]]:
    url, process = start_redis(logs_dir)
    yield url, process.process.pid
    os.kill(process.process.pid, signal.SIGCONT)
    process.stop()


def test_an_event_answered_503_because_the_queue_stalled_is_processed_once_when_retried(
    settings, services, local_s3, stoppable_redis
):
    """The enqueue fails for real (the stack's redis-server is SIGSTOPped): 503, and the upload stays
    `uploaded` — the record says what happened. The sender's retry queues the job; a second retry, or a
    duplicate, queues nothing; the upload is processed exactly once."""
    redis_url, redis_pid = stoppable_redis
    own = Services(own_settings(settings, local_s3, "stall", redis_url=redis_url))
    api = ServedApp(create_app(services=own))
    stack = Stack(own, api, services)
    try:
        client = stack.client()
        upload_id = client.upload("avatar", "image/jpeg", images.jpeg(64, 64))

        os.kill(redis_pid, signal.SIGSTOP)
        try:
            refused = stack.event(upload_id)
            assert refused.status_code == 503, refused.text
            assert error_code(refused) == "queue_unavailable"
            assert client.status(upload_id).json()["status"] == "uploaded"
        finally:
            os.kill(redis_pid, signal.SIGCONT)
        assert stack.queued_ids() == []  # the 503 was true: nothing was queued

        retries = at_once(lambda: stack.event(upload_id), lambda: stack.event(upload_id))
        assert sorted(o for r in retries for o in r.json()["outcomes"]) == ["duplicate", "queued"]
        assert stack.queued_ids() == [processing_job_id(upload_id)]
        assert stack.event(upload_id).json()["outcomes"] == ["duplicate"]

        stack.drain()
        assert client.status(upload_id).json()["status"] == "ready"
        assert stack.queued_ids() == []
        assert stack.event(upload_id).json()["outcomes"] == ["duplicate"]  # a late replay starts nothing
        assert stack.queued_ids() == []
    finally:
        api.stop()
        for queue in own.processing_queues:
            queue.delete(delete_jobs=True)
        own.close()
