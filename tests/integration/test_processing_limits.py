"""Hostile and heavy images through the whole pipeline: refused by the structure checks or by the limits of
the processing child, never retried into `failed`, the temp object deleted, the worker free at once."""

from __future__ import annotations

import io
import time

import pytest
import requests
from PIL import Image

from app.services import Services
from tests import images
from tests.support import BrokerClient
from workers import context
from workers.worker import InProcessWorker


@pytest.fixture
def drain_with(services: Services, settings):
    """Run the queued jobs with some settings changed (a real RQ worker in this process, burst mode)."""
    made: list[Services] = []

    def drain(**changes) -> None:
        custom = Services(settings.model_copy(update=changes))
        made.append(custom)
        context.use_services(custom)
        try:
            InProcessWorker([services.queue], connection=services.redis).work(
                burst=True, with_scheduler=False
            )
        finally:
            context.use_services(services)

    yield drain
    for custom in made:
        custom.db.dispose()


def _process(client: BrokerClient, drain, kind: str, content_type: str, data: bytes, **extra) -> dict:
    upload_id = client.upload(kind, content_type, data, **extra)
    client.wait_status(upload_id, {"uploaded"})
    started = time.monotonic()
    drain()
    status = client.status(upload_id).json()
    status["seconds"] = time.monotonic() - started
    return status


def test_a_jpeg_with_a_repeated_scan_is_refused_from_its_header(alice, drain, services):
    status = _process(alice, drain, "avatar", "image/jpeg", images.repeated_scan_jpeg(1000, 150))

    assert status["status"] == "rejected", status
    assert status["error"]["code"] == "too_complex"
    assert "scans" in status["error"]["message"]
    assert services.storage.head(f"temp/{status['upload_id']}") is None


def test_marker_and_chunk_floods_are_refused_from_their_headers(alice, drain):
    jpeg = _process(alice, drain, "food_image", "image/jpeg", images.comment_flood_jpeg(1_300_000))
    png = _process(alice, drain, "food_image", "image/png", images.chunk_flood_png(437_000))

    assert (jpeg["status"], jpeg["error"]["code"]) == ("rejected", "too_complex")
    assert (png["status"], png["error"]["code"]) == ("rejected", "too_complex")


def test_cpu_beyond_the_image_limit_is_a_rejection_not_a_retry(alice, drain_with, services):
    """A valid JPEG (85 extra scans pass the header check) that costs ~2.7 s of CPU, under a 1 s limit."""
    data = images.repeated_scan_jpeg(7000, 85)
    upload_id = alice.upload("workout_photo", "image/jpeg", data, context={"workout_id": "w1"})
    alice.wait_status(upload_id, {"uploaded"})

    drain_with(image_cpu_seconds=1)

    status = alice.status(upload_id).json()
    assert status["status"] == "rejected", status
    assert status["error"]["code"] == "too_complex"
    assert services.storage.head(f"temp/{upload_id}") is None
    job = services.queue.fetch_job(f"process-{upload_id}")
    assert job is not None and job.get_status() == "finished"  # a verdict: no retry scheduled, not failed


def test_an_image_whose_decode_needs_more_memory_than_the_budget_is_refused(alice, drain_with):
    data = images.rgba_image(3000, 3000, "WEBP", lossless=True)  # lossless: ~8 bytes a pixel, 69 MiB
    upload_id = alice.upload("avatar", "image/webp", data)
    alice.wait_status(upload_id, {"uploaded"})

    drain_with(image_memory_bytes=64 * 1024 * 1024)

    status = alice.status(upload_id).json()
    assert status["status"] == "rejected", status
    assert status["error"]["code"] == "too_large_to_process"
    assert "the limit is 64 MiB" in status["error"]["message"]


def test_a_50_megapixel_16_bit_rgba_png_is_processed_within_the_default_limits(alice, drain):
    status = _process(alice, drain, "avatar", "image/png", images.rgba16_png(7071, 7071))

    assert status["status"] == "ready", status
    assert (status["media"]["width"], status["media"]["height"]) == (1200, 1200)


def test_a_50_megapixel_lossy_rgba_webp_is_processed_within_the_default_limits(alice, drain):
    data = images.rgba_image(7071, 7071, "WEBP", quality=80)  # decoded scaled, row by row, by libwebp
    status = _process(alice, drain, "avatar", "image/webp", data)

    assert status["status"] == "ready", status
    assert (status["media"]["width"], status["media"]["height"]) == (1200, 1200)


def test_an_animated_png_becomes_its_first_frame(alice, drain):
    status = _process(alice, drain, "avatar", "image/png", images.apng(320, 240, frames=3))

    assert status["status"] == "ready", status
    fetched = requests.get(alice.media(status["upload_id"]).json()["url"], timeout=10)
    out = Image.open(io.BytesIO(fetched.content)).convert("RGB")
    red, green, blue = out.getpixel((160, 120))
    assert red > 200 and green < 60 and blue < 60  # the first frame is red


def test_an_animated_webp_becomes_its_first_frame(alice, drain):
    status = _process(alice, drain, "avatar", "image/webp", images.animated_webp(320, 240, frames=3))

    assert status["status"] == "ready", status
    fetched = requests.get(alice.media(status["upload_id"]).json()["url"], timeout=10)
    red, green, blue = Image.open(io.BytesIO(fetched.content)).convert("RGB").getpixel((160, 120))
    assert red > 200 and green < 60 and blue < 60
