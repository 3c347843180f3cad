"""`BROKER_S3_INTERNAL_ENDPOINT_URL`: the broker's own S3 requests go there, while every URL a client gets
(presigned POST, GET and part URLs, public links) names `BROKER_S3_ENDPOINT_URL`. Real HTTP to moto; the
public endpoint is a port nobody listens on, so any request of the broker's sent there would fail."""

from __future__ import annotations

from pathlib import Path

import pytest
from botocore.exceptions import EndpointConnectionError

from app.config import Settings
from app.devstack.local_s3 import LocalS3
from app.devstack.processes import free_port
from app.storage import Storage


@pytest.fixture
def nowhere() -> str:
    return f"http://127.0.0.1:{free_port()}"


def test_requests_go_to_the_internal_endpoint_and_urls_name_the_public_one(
    settings: Settings, local_s3: LocalS3, nowhere: str, tmp_path: Path
) -> None:
    storage = Storage(
        settings.model_copy(
            update={"s3_endpoint_url": nowhere, "s3_internal_endpoint_url": local_s3.moto_url}
        )
    )
    key = "temp/internal-endpoint-check"
    storage.put(key, b"workout plan", "application/pdf", "no-store", {})
    assert storage.download_within(key, tmp_path / "copy", 100) == len(b"workout plan")
    assert (tmp_path / "copy").read_bytes() == b"workout plan"

    ticket = storage.presign_post(key, "image/jpeg", [["content-length-range", 1, 10]], 60)
    assert ticket["url"].startswith(f"{nowhere}/")
    assert storage.presign_get(key, 60).startswith(f"{nowhere}/")
    multipart_id = storage.create_multipart(key, "video/mp4", {})
    assert storage.presign_upload_part(key, multipart_id, 1, 5, 60).startswith(f"{nowhere}/")
    storage.abort_multipart(key, multipart_id)
    assert storage.public_url("public/a.jpg").startswith(f"{nowhere}/")

    storage.delete(key)
    assert storage.head(key) is None


def test_without_an_internal_endpoint_requests_go_to_the_public_one(settings: Settings, nowhere: str) -> None:
    storage = Storage(
        settings.model_copy(update={"s3_endpoint_url": nowhere, "s3_internal_endpoint_url": None})
    )
    assert storage.client is storage.presigner
    with pytest.raises(EndpointConnectionError):
        storage.head("temp/anything")
