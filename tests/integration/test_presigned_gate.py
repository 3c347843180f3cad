"""Presigned URLs through the local stack's gate, over real HTTP, with a real moto server behind it.

moto alone stores a part whatever its URL's signature, expiry or length; the gate must refuse what S3
refuses. Every refusal also checks that nothing reached the store (ListParts stays empty).
"""

from __future__ import annotations

import http.client
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from unittest import mock
from urllib.parse import parse_qsl, urlencode, urlsplit, urlunsplit
from xml.etree import ElementTree

import boto3
import pytest
import requests
from botocore.config import Config

from app.devstack.local_s3 import LOCAL_ACCESS_KEY, LOCAL_REGION, LOCAL_SECRET_KEY, LocalS3

PART = bytes(range(256)) * 40  # 10,240 bytes: ListParts does not care that it is under 5 MiB
KEY = "temp/9f1c2d3e"


@pytest.fixture(scope="module")
def s3(local_s3: LocalS3) -> Any:
    return local_s3.client("s3")


@pytest.fixture(scope="module")
def bucket(s3: Any) -> str:
    name = f"presigned-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


@pytest.fixture(scope="module")
def web() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # loopback only, whatever proxy the machine configures
        yield session


@pytest.fixture
def upload_id(s3: Any, bucket: str) -> Iterator[str]:
    """A multipart upload shaped like the broker's: at temp/<id>, with its declared Content-Type."""
    started = s3.create_multipart_upload(Bucket=bucket, Key=KEY, ContentType="video/mp4")
    yield started["UploadId"]
    s3.abort_multipart_upload(Bucket=bucket, Key=KEY, UploadId=started["UploadId"])


def part_url(
    s3: Any, bucket: str, upload_id: str, number: int = 1, length: int = len(PART), expires: int = 900
) -> str:
    """A presigned UploadPart URL as the broker hands it out: its exact Content-Length is signed."""
    return s3.generate_presigned_url(
        "upload_part",
        Params={
            "Bucket": bucket,
            "Key": KEY,
            "UploadId": upload_id,
            "PartNumber": number,
            "ContentLength": length,
        },
        ExpiresIn=expires,
    )


def stored_parts(s3: Any, bucket: str, upload_id: str) -> list[tuple[int, int]]:
    listed = s3.list_parts(Bucket=bucket, Key=KEY, UploadId=upload_id)
    return [(part["PartNumber"], part["Size"]) for part in listed.get("Parts", [])]


@contextmanager
def signed_at(moment: datetime) -> Iterator[None]:
    """Presign as if the clock said ``moment`` (botocore stamps X-Amz-Date with this function)."""
    with mock.patch("botocore.auth.get_current_datetime", return_value=moment.replace(tzinfo=None)):
        yield


def with_query(url: str, **changes: str | None) -> str:
    """``url`` with some query parameters replaced (``None`` drops one), the rest kept in order."""
    parts = urlsplit(url)
    pairs = [(name, changes.get(name, value)) for name, value in parse_qsl(parts.query)]
    pairs += [(name, value) for name, value in changes.items() if name not in dict(pairs)]
    query = urlencode([(name, value) for name, value in pairs if value is not None])
    return urlunsplit(parts._replace(query=query))


def s3_error(response: requests.Response | http.client.HTTPResponse, body: bytes) -> dict[str, str]:
    assert response.headers["Content-Type"] == "application/xml"
    root = ElementTree.fromstring(body)
    assert root.tag == "Error"
    return {child.tag: child.text or "" for child in root}


def refused(
    response: requests.Response, status: int, code: str, s3: Any, bucket: str, upload_id: str
) -> dict[str, str]:
    assert response.status_code == status, response.text
    error = s3_error(response, response.content)
    assert error["Code"] == code
    assert error["RequestId"]
    assert stored_parts(s3, bucket, upload_id) == []  # nothing reached the store
    return error


# --- accepted -----------------------------------------------------------------------------------------------


def test_presigned_part_is_stored_with_its_size(
    s3: Any, web: requests.Session, bucket: str, upload_id: str
) -> None:
    response = web.put(part_url(s3, bucket, upload_id, number=3), data=PART)

    assert response.status_code == 200, response.text
    assert response.headers["ETag"]
    assert stored_parts(s3, bucket, upload_id) == [(3, len(PART))]


def test_presigned_get_serves_the_object(s3: Any, web: requests.Session, bucket: str) -> None:
    key = "private/user_1/workouts/w1/a b+c%2Fé.jpg"  # every character the path encoding must get right
    s3.put_object(Bucket=bucket, Key=key, Body=b"private bytes")
    url = s3.generate_presigned_url(
        "get_object",
        Params={
            "Bucket": bucket,
            "Key": key,
            # What document links carry: a query value with quotes, spaces and non-ASCII text.
            "ResponseContentDisposition": "attachment; filename=\"plan.pdf\"; filename*=UTF-8''pl%C3%A1n.pdf",
        },
        ExpiresIn=60,
    )

    response = web.get(url)

    assert response.status_code == 200, response.text
    assert response.content == b"private bytes"


def test_a_url_can_be_signed_for_a_week(s3: Any, web: requests.Session, bucket: str, upload_id: str) -> None:
    assert web.put(part_url(s3, bucket, upload_id, expires=604800), data=PART).status_code == 200


# --- refused ------------------------------------------------------------------------------------------------


def test_forged_signature(s3: Any, web: requests.Session, bucket: str, upload_id: str) -> None:
    forged = with_query(part_url(s3, bucket, upload_id), **{"X-Amz-Signature": "0" * 64})

    error = refused(web.put(forged, data=PART), 403, "SignatureDoesNotMatch", s3, bucket, upload_id)
    assert error["SignatureProvided"] == "0" * 64
    assert error["AWSAccessKeyId"] == LOCAL_ACCESS_KEY


def test_signed_with_another_secret(
    local_s3: LocalS3, web: requests.Session, bucket: str, upload_id: str
) -> None:
    impostor = boto3.client(
        "s3",
        endpoint_url=local_s3.s3_url,
        region_name=LOCAL_REGION,
        aws_access_key_id=LOCAL_ACCESS_KEY,
        aws_secret_access_key=LOCAL_SECRET_KEY + "-guessed",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )

    response = web.put(part_url(impostor, bucket, upload_id), data=PART)

    refused(response, 403, "SignatureDoesNotMatch", local_s3.client("s3"), bucket, upload_id)


def test_tampered_part_number(s3: Any, web: requests.Session, bucket: str, upload_id: str) -> None:
    other_part = with_query(part_url(s3, bucket, upload_id, number=1), partNumber="2")

    error = refused(web.put(other_part, data=PART), 403, "SignatureDoesNotMatch", s3, bucket, upload_id)
    assert "partNumber=2" in error["CanonicalRequest"]


def test_tampered_key(s3: Any, web: requests.Session, bucket: str, upload_id: str) -> None:
    url = part_url(s3, bucket, upload_id).replace(f"/{KEY}?", "/public/evil.mp4?")

    refused(web.put(url, data=PART), 403, "SignatureDoesNotMatch", s3, bucket, upload_id)


def test_expired_url(s3: Any, web: requests.Session, bucket: str, upload_id: str) -> None:
    with signed_at(datetime.now(UTC) - timedelta(minutes=16)):
        url = part_url(s3, bucket, upload_id, expires=900)

    error = refused(web.put(url, data=PART), 403, "AccessDenied", s3, bucket, upload_id)
    assert error["Message"] == "Request has expired"
    assert error["X-Amz-Expires"] == "900"
    assert error["Expires"] < error["ServerTime"]


def test_expired_private_link(s3: Any, web: requests.Session, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="private/old.jpg", Body=b"x")
    with signed_at(datetime.now(UTC) - timedelta(seconds=61)):
        url = s3.generate_presigned_url(
            "get_object", Params={"Bucket": bucket, "Key": "private/old.jpg"}, ExpiresIn=60
        )

    response = web.get(url)

    assert response.status_code == 403
    assert s3_error(response, response.content)["Message"] == "Request has expired"


def test_url_dated_in_the_future(s3: Any, web: requests.Session, bucket: str, upload_id: str) -> None:
    with signed_at(datetime.now(UTC) + timedelta(hours=1)):
        url = part_url(s3, bucket, upload_id)

    error = refused(web.put(url, data=PART), 403, "AccessDenied", s3, bucket, upload_id)
    assert error["Message"] == "Request is not valid yet"


@pytest.mark.parametrize("delta", [-1, +1], ids=["one-byte-short", "one-byte-long"])
def test_body_length_other_than_the_signed_one(
    s3: Any, web: requests.Session, bucket: str, upload_id: str, delta: int
) -> None:
    url = part_url(s3, bucket, upload_id, length=len(PART))
    body = PART[:-1] if delta < 0 else PART + b"!"

    error = refused(web.put(url, data=body), 403, "SignatureDoesNotMatch", s3, bucket, upload_id)
    assert f"content-length:{len(body)}\n" in error["CanonicalRequest"]


def test_chunked_body(s3: Any, web: requests.Session, bucket: str, upload_id: str) -> None:
    url = part_url(s3, bucket, upload_id)
    chunks = (PART[i : i + 4096] for i in range(0, len(PART), 4096))  # the exact bytes, but no length

    refused(web.put(url, data=chunks), 403, "SignatureDoesNotMatch", s3, bucket, upload_id)


def raw_put(url: str, headers: dict[str, str], body: bytes, half_close: bool = False) -> tuple[Any, bytes]:
    """A PUT with exactly these framing headers and bytes (requests would fix them up)."""
    parts = urlsplit(url)
    conn = http.client.HTTPConnection(parts.hostname, parts.port, timeout=10)
    try:
        conn.putrequest("PUT", f"{parts.path}?{parts.query}", skip_accept_encoding=True)
        for name, value in headers.items():
            conn.putheader(name, value)
        conn.endheaders()
        conn.send(body)
        if half_close:
            conn.sock.shutdown(socket.SHUT_WR)  # the client stops sending: fewer bytes than announced
        response = conn.getresponse()
        return response, response.read()
    finally:
        conn.close()


def test_chunked_body_with_the_signed_content_length_too(s3: Any, bucket: str, upload_id: str) -> None:
    # HTTP ignores Content-Length beside Transfer-Encoding (RFC 9112): the body's length is still unknown.
    chunked = b"%x\r\n%s\r\n0\r\n\r\n" % (len(PART), PART)
    response, body = raw_put(
        part_url(s3, bucket, upload_id),
        {"Content-Length": str(len(PART)), "Transfer-Encoding": "chunked"},
        chunked,
    )

    assert response.status == 403
    assert s3_error(response, body)["Code"] == "SignatureDoesNotMatch"
    assert stored_parts(s3, bucket, upload_id) == []


def test_body_cut_short_of_its_content_length(s3: Any, bucket: str, upload_id: str) -> None:
    response, body = raw_put(
        part_url(s3, bucket, upload_id), {"Content-Length": str(len(PART))}, PART[:-1], half_close=True
    )

    assert response.status == 400
    error = s3_error(response, body)
    assert (error["Code"], error["NumberBytesProvided"]) == ("IncompleteBody", str(len(PART) - 1))
    assert stored_parts(s3, bucket, upload_id) == []


def test_expiry_over_a_week(s3: Any, web: requests.Session, bucket: str, upload_id: str) -> None:
    url = part_url(s3, bucket, upload_id, expires=604801)

    error = refused(web.put(url, data=PART), 400, "AuthorizationQueryParametersError", s3, bucket, upload_id)
    assert "604800" in error["Message"]


@pytest.mark.parametrize(
    "change",
    [
        {"X-Amz-Date": None},
        {"X-Amz-Expires": "soon"},
        {"X-Amz-Credential": "local-broker/us-east-1/s3"},
        {"X-Amz-Algorithm": "AWS4-ECDSA-P256-SHA256"},
    ],
    ids=["missing-date", "expires-not-a-number", "malformed-credential", "other-algorithm"],
)
def test_malformed_auth_parameters(
    s3: Any, web: requests.Session, bucket: str, upload_id: str, change: dict[str, str | None]
) -> None:
    url = with_query(part_url(s3, bucket, upload_id), **change)

    refused(web.put(url, data=PART), 400, "AuthorizationQueryParametersError", s3, bucket, upload_id)


def test_unknown_access_key(local_s3: LocalS3, web: requests.Session, bucket: str, upload_id: str) -> None:
    stranger = boto3.client(
        "s3",
        endpoint_url=local_s3.s3_url,
        region_name=LOCAL_REGION,
        aws_access_key_id="AKIASTRANGER",
        aws_secret_access_key="anything",
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )

    response = web.put(part_url(stranger, bucket, upload_id), data=PART)

    error = refused(response, 403, "InvalidAccessKeyId", local_s3.client("s3"), bucket, upload_id)
    assert error["AWSAccessKeyId"] == "AKIASTRANGER"


def test_unsigned_amz_header(s3: Any, web: requests.Session, bucket: str, upload_id: str) -> None:
    response = web.put(part_url(s3, bucket, upload_id), data=PART, headers={"x-amz-meta-owner": "mallory"})

    error = refused(response, 403, "AccessDenied", s3, bucket, upload_id)
    assert error["HeadersNotSigned"] == "x-amz-meta-owner"


def test_query_and_header_auth_together(s3: Any, web: requests.Session, bucket: str, upload_id: str) -> None:
    response = web.put(
        part_url(s3, bucket, upload_id), data=PART, headers={"Authorization": "AWS4-HMAC-SHA256 x"}
    )

    refused(response, 400, "InvalidArgument", s3, bucket, upload_id)


def test_header_signed_calls_still_pass(s3: Any, bucket: str, upload_id: str) -> None:
    s3.upload_part(Bucket=bucket, Key=KEY, UploadId=upload_id, PartNumber=1, Body=PART)

    assert stored_parts(s3, bucket, upload_id) == [(1, len(PART))]


# --- memory -------------------------------------------------------------------------------------------------

BIG_PART = 32 * 1024 * 1024
MAX_RSS_GROWTH = 16 * 1024 * 1024


def peak_rss(pid: int) -> int:
    """VmHWM: the process's resident-set high-water mark, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


@pytest.fixture
def own_gate(local_s3: LocalS3) -> Iterator[tuple[str, int]]:
    """A gate process of this test's own in front of the session's moto, so its peak RSS is this test's."""
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.devstack.policy_gate",
            "--upstream",
            local_s3.moto_url,
            "--credentials",
            f"{LOCAL_ACCESS_KEY}:{LOCAL_SECRET_KEY}",
        ],
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )
    try:
        banner = process.stdout.readline()  # "policy gate on http://127.0.0.1:<port> -> <upstream>"
        yield banner.split()[3], process.pid
    finally:
        process.terminate()
        process.wait(10)


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc")
def test_a_32_mib_presigned_part_streams_with_bounded_memory(
    own_gate: tuple[str, int], web: requests.Session, bucket: str, upload_id: str, tmp_path: Path
) -> None:
    gate_url, pid = own_gate
    via_gate = boto3.client(
        "s3",
        endpoint_url=gate_url,
        region_name=LOCAL_REGION,
        aws_access_key_id=LOCAL_ACCESS_KEY,
        aws_secret_access_key=LOCAL_SECRET_KEY,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )
    warm_up = web.put(part_url(via_gate, bucket, upload_id, number=1), data=PART)
    assert warm_up.status_code == 200, warm_up.text
    baseline = peak_rss(pid)  # imports and buffers are in place by now
    body = tmp_path / "part"
    with body.open("wb") as out:  # on disk, so the client does not hold it either
        for _ in range(BIG_PART // len(PART) + 1):
            out.write(PART)
        out.truncate(BIG_PART)

    with body.open("rb") as data:  # a file: requests sends its Content-Length and streams it
        response = web.put(part_url(via_gate, bucket, upload_id, number=2, length=BIG_PART), data=data)

    assert response.status_code == 200, response.text
    assert stored_parts(via_gate, bucket, upload_id) == [(1, len(PART)), (2, BIG_PART)]
    growth = peak_rss(pid) - baseline
    assert growth < MAX_RSS_GROWTH, f"gate peak RSS grew {growth / 2**20:.1f} MiB for a 32 MiB part"
