"""The upload's whole life over real interfaces: API over HTTP, the local S3 behind its policy gate, SNS
delivering signed notifications to the webhook, Redis, a real RQ worker, PostgreSQL (or SQLite)."""

from __future__ import annotations

import io
import time

import requests
from PIL import Image

from tests import images
from tests.support import BrokerClient


def upload_and_process(
    client: BrokerClient, drain, kind: str, content_type: str, data: bytes, **extra
) -> dict:
    upload_id = client.upload(kind, content_type, data, **extra)
    client.wait_status(upload_id, {"uploaded"})  # SNS delivered the S3 event to the webhook
    drain()
    return client.status(upload_id).json()


def test_rotated_photo_with_gps_ends_ready_upright_small_and_clean(alice: BrokerClient, drain, services):
    data = images.jpeg(4000, 3000, orientation=6, gps=True)

    status = upload_and_process(
        alice, drain, "workout_photo", "image/jpeg", data, context={"workout_id": "w-42"}
    )

    assert status["status"] == "ready", status
    media = status["media"]
    assert media["content_type"] == "image/jpeg"
    assert (media["width"], media["height"]) == (900, 1200)  # orientation 6 = portrait
    link = alice.media(status["upload_id"]).json()
    assert link["url_expires_at"]  # private: a presigned GET
    fetched = requests.get(link["url"], timeout=10)
    assert fetched.status_code == 200
    assert fetched.headers["Content-Type"] == "image/jpeg"
    out = Image.open(io.BytesIO(fetched.content))
    assert out.size == (900, 1200)
    assert not out.getexif()  # no EXIF at all, so no GPS
    assert out.info.get("progressive") == 1
    upload = (
        services.db.engine.connect()
        .exec_driver_sql(
            "select final_key, sha256, bytes from uploads where id = ?"
            if services.db.engine.dialect.name == "sqlite"
            else "select final_key, sha256, bytes from uploads where id = %s",
            (status["upload_id"],),
        )
        .one()
    )
    assert upload.final_key.startswith("private/user_")
    assert "/workouts/w-42/" in upload.final_key
    assert upload.bytes == len(fetched.content)
    # the temp object is gone once promoted
    assert services.storage.head(f"temp/{status['upload_id']}") is None


def test_png_with_alpha_becomes_public_jpeg_on_white(alice: BrokerClient, drain):
    status = upload_and_process(alice, drain, "avatar", "image/png", images.png_with_alpha())

    assert status["status"] == "ready", status
    link = alice.media(status["upload_id"]).json()
    assert "url_expires_at" not in link  # public
    fetched = requests.get(link["url"], timeout=10)
    assert fetched.headers["Cache-Control"] == "public, max-age=31536000, immutable"
    out = Image.open(io.BytesIO(fetched.content))
    assert out.format == "JPEG" and out.mode == "RGB"
    right = out.getpixel((out.width - 5, out.height // 2))
    assert min(right) > 240  # transparent area composited over white


def test_html_declared_as_jpeg_is_rejected_as_type_mismatch(alice: BrokerClient, drain, services):
    html = b"<!doctype html><html><script>alert(1)</script></html>" * 20

    status = upload_and_process(alice, drain, "avatar", "image/jpeg", html)

    assert status["status"] == "rejected"
    assert status["error"]["code"] == "type_mismatch"
    assert "media" not in status
    assert services.storage.head(f"temp/{status['upload_id']}") is None
    assert alice.media(status["upload_id"]).status_code == 404


def test_truncated_jpeg_is_rejected_as_corrupt(alice: BrokerClient, drain):
    status = upload_and_process(alice, drain, "food_image", "image/jpeg", images.truncated_jpeg())

    assert status["status"] == "rejected"
    assert status["error"]["code"] == "corrupt"


def test_pixel_bombs_are_refused_before_decoding(alice: BrokerClient, drain):
    for side in (30000, 12000):
        started = time.monotonic()
        status = upload_and_process(alice, drain, "avatar", "image/png", images.huge_png(side, side))
        assert status["status"] == "rejected", side
        assert status["error"]["code"] == "image_too_large"
        assert time.monotonic() - started < 10


def test_same_event_twice_promotes_once(alice: BrokerClient, drain, services, settings, api):
    data = images.jpeg(640, 480)
    upload_id = alice.upload("food_image", "image/jpeg", data)
    alice.wait_status(upload_id, {"uploaded"})
    event = {
        "Records": [
            {
                "eventName": "ObjectCreated:Post",
                "s3": {
                    "bucket": {"name": settings.s3_bucket},
                    "object": {"key": f"temp%2F{upload_id}", "size": len(data)},
                },
            }
        ]
    }
    replay = requests.post(
        f"{api.url}/v1/events/s3",
        json=event,
        headers={"Authorization": f"Bearer {settings.webhook_token}"},
        timeout=10,
    )
    assert replay.status_code == 200
    assert replay.json()["outcomes"] == ["duplicate"]
    assert services.queue.count == 1

    drain()
    first = alice.status(upload_id).json()
    assert first["status"] == "ready"

    again = requests.post(
        f"{api.url}/v1/events/s3",
        json=event,
        headers={"Authorization": f"Bearer {settings.webhook_token}"},
        timeout=10,
    )
    assert again.json()["outcomes"] == ["duplicate"]
    assert services.queue.count == 0
    assert alice.status(upload_id).json()["updated_at"] == first["updated_at"]


def test_another_users_upload_is_not_found(alice: BrokerClient, bob: BrokerClient, drain):
    status = upload_and_process(
        alice, drain, "workout_photo", "image/jpeg", images.jpeg(300, 200), context={"workout_id": "1"}
    )
    assert status["status"] == "ready"

    assert bob.status(status["upload_id"]).status_code == 404
    assert bob.media(status["upload_id"]).status_code == 404
    assert bob.media(status["upload_id"]).json()["error"]["code"] == "not_found"
