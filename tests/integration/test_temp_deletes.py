"""`broker worker` deletes a finished upload's temp object after its job, on a thread (`workers.temp_deletes`):
the job does not wait for the DELETE, a slow store makes jobs delete their own objects again, and a stopping
worker waits for the deletes still waiting, within a limit. Real uploads, the local S3, a real RQ worker; a
held or failing DELETE stands for a slow or broken store."""

from __future__ import annotations

import logging
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Iterator

import pytest

from tests import images
from tests.support import REPO, BrokerClient, settings_env
from workers import temp_deletes
from workers.temp_deletes import deferred_temp_deletes, delete_after_job


class HeldDeletes:
    """The store's DELETE, made to wait on the deleting thread until released."""

    def __init__(self) -> None:
        self.entered = threading.Event()
        self.release = threading.Event()


@pytest.fixture
def held(services, monkeypatch: pytest.MonkeyPatch) -> Iterator[HeldDeletes]:
    hold = HeldDeletes()
    delete = services.storage.delete

    def held_delete(key: str) -> None:
        if threading.current_thread().name == "temp-deletes":
            hold.entered.set()
            assert hold.release.wait(30)
        delete(key)

    monkeypatch.setattr(services.storage, "delete", held_delete)
    yield hold
    hold.release.set()


def uploaded_photo(client: BrokerClient) -> str:
    upload_id = client.upload(
        "workout_photo", "image/jpeg", images.jpeg(1600, 1200), context={"workout_id": "w1"}
    )
    client.wait_status(upload_id, {"uploaded"})
    return upload_id


def temp_objects(services, count: int) -> list[str]:
    keys = [f"temp/{uuid.uuid4()}" for _ in range(count)]
    for key in keys:
        services.storage.put(key, b"x", "image/jpeg", "no-store", {})
    return keys


def exists(services, key: str) -> bool:
    return services.storage.head(key) is not None


def test_broker_worker_leaves_no_temp_object_once_it_has_exited(alice, settings, services):
    upload_id = uploaded_photo(alice)
    worker = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--burst", "--without-scheduler"],
        env=settings_env(settings),
        cwd=REPO,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    assert worker.wait(timeout=120) == 0
    assert alice.status(upload_id).json()["status"] == "ready"
    assert not exists(services, f"temp/{upload_id}")


def test_the_job_ends_without_waiting_for_the_delete(alice, drain, services, held):
    upload_id = uploaded_photo(alice)
    with deferred_temp_deletes():
        drain()  # returns with the DELETE still held: the job did not wait for it
        assert alice.status(upload_id).json()["status"] == "ready"
        assert held.entered.wait(10)
        assert exists(services, f"temp/{upload_id}")
        held.release.set()
    assert not exists(services, f"temp/{upload_id}")  # leaving waits for the deletes still waiting


def test_past_the_pending_limit_a_job_deletes_its_own_object(services, held, monkeypatch):
    monkeypatch.setattr(temp_deletes, "PENDING_LIMIT", 1)
    in_progress, waiting, past_the_limit = temp_objects(services, 3)
    with deferred_temp_deletes():
        delete_after_job(services.storage, in_progress, {})
        assert held.entered.wait(10)  # the thread holds the first: the queue is empty again
        delete_after_job(services.storage, waiting, {})  # fills the one place
        delete_after_job(services.storage, past_the_limit, {})  # no place: deleted here, now
        assert not exists(services, past_the_limit)
        assert exists(services, in_progress) and exists(services, waiting)
        held.release.set()
    assert not exists(services, in_progress) and not exists(services, waiting)


def test_a_stopping_worker_waits_for_a_stuck_store_only_so_long(services, held, caplog):
    [stuck] = temp_objects(services, 1)
    started = time.monotonic()
    with (
        caplog.at_level(logging.WARNING, logger="workers.temp_deletes"),
        deferred_temp_deletes(drain_seconds=0.5),
    ):
        delete_after_job(services.storage, stuck, {})
        assert held.entered.wait(10)
    assert time.monotonic() - started < 5
    [record] = [r for r in caplog.records if r.getMessage() == "temp deletes left to the clean-up sweep"]
    assert (record.outcome, record.count) == ("abandoned", 1)
    assert exists(services, stuck)  # left for the sweep, as a failed delete is


def test_a_failed_delete_is_logged_and_the_next_ones_still_run(services, monkeypatch, caplog):
    broken, fine = temp_objects(services, 2)
    delete = services.storage.delete

    def failing_for_one(key: str) -> None:
        if key == broken:
            raise ConnectionError("store unreachable")
        delete(key)

    monkeypatch.setattr(services.storage, "delete", failing_for_one)
    with caplog.at_level(logging.WARNING, logger="workers.temp_deletes"), deferred_temp_deletes():
        delete_after_job(services.storage, broken, {"upload_id": "u-broken"})
        delete_after_job(services.storage, fine, {"upload_id": "u-fine"})
    [record] = [r for r in caplog.records if r.getMessage() == "temp object not deleted"]
    assert record.upload_id == "u-broken"
    assert exists(services, broken) and not exists(services, fine)
