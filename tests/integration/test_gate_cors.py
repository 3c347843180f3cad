"""A browser page uploading straight to the local store, over real HTTP: the gate lets CORS through as S3 does.

Before a presigned part PUT, a browser sends a preflight (`OPTIONS`, no credentials) to the same URL, query
included; S3 answers it from the bucket's CORS rules and never checks its signature. The page must also be able
to read the part's `ETag` (it completes the upload with it) and the error code of a refusal.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any
from xml.etree import ElementTree

import pytest
import requests

from app.devstack.local_s3 import LocalS3, create_bucket

ORIGIN = "http://127.0.0.1:8000"  # the demo page's origin under `broker dev`; another port than the store
KEY = "temp/3b1f0c9e"


@pytest.fixture(scope="module")
def s3(local_s3: LocalS3) -> Any:
    return local_s3.client("s3")


@pytest.fixture(scope="module")
def bucket(local_s3: LocalS3) -> str:
    """A bucket configured as `broker dev` configures it: the CloudFormation template's CORS rules."""
    name = f"cors-{uuid.uuid4().hex[:12]}"
    create_bucket(local_s3, name)
    return name


@pytest.fixture
def part_url(s3: Any, bucket: str) -> Iterator[str]:
    upload_id = s3.create_multipart_upload(Bucket=bucket, Key=KEY, ContentType="video/mp4")["UploadId"]
    yield s3.generate_presigned_url(
        "upload_part",
        Params={"Bucket": bucket, "Key": KEY, "UploadId": upload_id, "PartNumber": 1, "ContentLength": 5},
        ExpiresIn=600,
    )
    s3.abort_multipart_upload(Bucket=bucket, Key=KEY, UploadId=upload_id)


def preflight(url: str, method: str, origin: str = ORIGIN) -> requests.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": method,
        "Access-Control-Request-Headers": "content-type",
    }
    return requests.options(url, headers=headers, timeout=10)


def test_a_presigned_part_put_passes_its_preflight_and_exposes_its_etag(part_url: str) -> None:
    answer = preflight(part_url, "PUT")

    # The gate used to check the preflight's signature like a PUT's: 403, and the upload never started.
    assert answer.status_code == 200, answer.text
    assert answer.headers["Access-Control-Allow-Origin"] in (ORIGIN, "*")
    assert "PUT" in answer.headers["Access-Control-Allow-Methods"]
    stored = requests.put(part_url, data=b"hello", headers={"Origin": ORIGIN}, timeout=10)
    assert stored.status_code == 200, stored.text
    assert stored.headers["ETag"]
    assert "etag" in stored.headers["Access-Control-Expose-Headers"].lower()


def test_a_preflight_proves_nothing_the_real_request_is_still_checked(part_url: str) -> None:
    assert preflight(part_url, "PUT").status_code == 200
    forged = part_url.replace("X-Amz-Signature=", "X-Amz-Signature=0")
    refused = requests.put(forged, data=b"hello", headers={"Origin": ORIGIN}, timeout=10)

    assert refused.status_code == 403
    assert ElementTree.fromstring(refused.content).findtext("Code") == "SignatureDoesNotMatch"
    # …and the page can read that code: the refusal carries the bucket's CORS answer for its origin.
    assert refused.headers["Access-Control-Allow-Origin"] in (ORIGIN, "*")


def test_a_refused_form_upload_is_readable_by_the_page(s3: Any, bucket: str) -> None:
    post = s3.generate_presigned_post(
        bucket,
        "temp/too-big",
        Fields={"Content-Type": "image/jpeg"},
        Conditions=[{"Content-Type": "image/jpeg"}, ["content-length-range", 1, 10]],
    )
    refused = requests.post(
        post["url"], data=post["fields"], files={"file": ("a.jpg", b"x" * 100)}, headers={"Origin": ORIGIN}
    )

    assert refused.status_code == 400
    assert ElementTree.fromstring(refused.content).findtext("Code") == "EntityTooLarge"
    assert refused.headers["Access-Control-Allow-Origin"] in (ORIGIN, "*")
