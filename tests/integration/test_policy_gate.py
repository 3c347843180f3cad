"""The POST-policy gate over real HTTP: boto3 tickets, requests uploads, a real moto server behind the gate.

Every refusal also checks that nothing reached the bucket; the 50 MB case runs the gate as its own process
and reads its peak RSS from /proc to prove the body is streamed, not held.
"""

from __future__ import annotations

import base64
import hashlib
import json
import socket
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from xml.etree import ElementTree

import boto3
import pytest
import requests
from botocore.config import Config
from moto.server import ThreadedMotoServer

from app.devstack.policy_gate import serve_gate
from app.devstack.post_policy import Condition, CredentialScope, policy_signature

ACCESS_KEY, SECRET_KEY, REGION = "testing", "testing", "us-east-1"
S3V4_PATH_STYLE = Config(signature_version="s3v4", s3={"addressing_style": "path"})
JPEG = b"\xff\xd8\xff\xe0fake-jpeg"  # 13 bytes: the bytes are not inspected, only counted
REPO = Path(__file__).resolve().parents[2]


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@pytest.fixture(scope="module")
def moto_url() -> Iterator[str]:
    server = ThreadedMotoServer(ip_address="127.0.0.1", port=free_port(), verbose=False)
    server.start()
    host, port = server.get_host_and_port()
    yield f"http://{host}:{port}"
    server.stop()


@pytest.fixture(scope="module")
def gate_url(moto_url: str) -> Iterator[str]:
    with serve_gate(moto_url, {ACCESS_KEY: SECRET_KEY}) as gate:
        yield gate.url


def s3_client(endpoint: str, access_key: str = ACCESS_KEY, config: Config = S3V4_PATH_STYLE) -> Any:
    return boto3.client(
        "s3",
        endpoint_url=endpoint,
        region_name=REGION,
        aws_access_key_id=access_key,
        aws_secret_access_key=SECRET_KEY,
        config=config,
    )


@pytest.fixture(scope="module")
def s3(gate_url: str) -> Any:
    return s3_client(gate_url)


@pytest.fixture(scope="module")
def http() -> Iterator[requests.Session]:
    with requests.Session() as session:
        session.trust_env = False  # loopback only, whatever proxy the machine configures
        yield session


@pytest.fixture
def bucket(s3: Any) -> str:
    name = f"gate-{uuid.uuid4().hex[:12]}"
    s3.create_bucket(Bucket=name)
    return name


def ticket(
    s3: Any,
    bucket: str,
    key: str = "temp/0b6f5a4e",
    content_type: str = "image/jpeg",
    max_size: int = 1024,
    expires: int = 900,
    conditions: list[Any] | None = None,
    fields: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A presigned POST shaped like the broker's tickets (DESIGN.md), plus any extra conditions/fields."""
    return s3.generate_presigned_post(
        bucket,
        key,
        Fields={"Content-Type": content_type, **(fields or {})},
        Conditions=[
            ["eq", "$key", key],
            ["eq", "$Content-Type", content_type],
            ["content-length-range", 1, max_size],
            *(conditions or []),
        ],
        ExpiresIn=expires,
    )


def upload(
    http: requests.Session,
    post: dict[str, Any],
    data: bytes = JPEG,
    url: str | None = None,
    filename: str = "photo.jpg",
    **changes: str,
) -> requests.Response:
    """POST the ticket's fields (with ``changes``; ``None`` removes one) and the file, as a client would."""
    fields = {**post["fields"], **changes}
    fields = {name: value for name, value in fields.items() if value is not None}
    return http.post(url or post["url"], data=fields, files={"file": (filename, data, "image/jpeg")})


def s3_error(response: requests.Response) -> dict[str, str]:
    assert response.headers["Content-Type"] == "application/xml"
    root = ElementTree.fromstring(response.content)
    assert root.tag == "Error"
    return {child.tag: child.text or "" for child in root}


def keys(s3: Any, bucket: str) -> list[str]:
    return [item["Key"] for item in s3.list_objects_v2(Bucket=bucket).get("Contents", [])]


def assert_refused(
    response: requests.Response, status: int, code: str, s3: Any, bucket: str
) -> dict[str, str]:
    assert response.status_code == status, response.text
    error = s3_error(response)
    assert error["Code"] == code
    assert error["RequestId"]
    assert keys(s3, bucket) == []  # nothing was written
    return error


# --- accepted uploads ---------------------------------------------------------------------------------------


def test_accepted_upload_lands_with_its_content_type(s3: Any, http: requests.Session, bucket: str) -> None:
    response = upload(http, ticket(s3, bucket))

    assert response.status_code == 204
    stored = s3.get_object(Bucket=bucket, Key="temp/0b6f5a4e")
    assert stored["ContentType"] == "image/jpeg"
    assert stored["Body"].read() == JPEG


def test_size_bounds_are_inclusive(s3: Any, http: requests.Session, bucket: str) -> None:
    post = ticket(s3, bucket, max_size=len(JPEG))

    assert upload(http, post).status_code == 204


def test_field_names_are_case_insensitive(s3: Any, http: requests.Session, bucket: str) -> None:
    post = ticket(s3, bucket)
    fields = {
        name.upper() if name in ("key", "Content-Type") else name: v for name, v in post["fields"].items()
    }

    response = http.post(post["url"], data=fields, files={"file": ("a.jpg", JPEG)})

    assert response.status_code == 204, response.text
    assert s3.head_object(Bucket=bucket, Key="temp/0b6f5a4e")["ContentType"] == "image/jpeg"


def test_filename_variable_is_expanded_before_the_policy_is_checked(
    s3: Any, http: requests.Session, bucket: str
) -> None:
    # boto3 turns a key ending in ${filename} into ["starts-with", "$key", "uploads/"].
    post = s3.generate_presigned_post(bucket, "uploads/${filename}", ExpiresIn=60)

    assert upload(http, post, filename="DCIM/IMG_1.jpg").status_code == 204
    assert keys(s3, bucket) == ["uploads/IMG_1.jpg"]


def test_starts_with_conditions(s3: Any, http: requests.Session, bucket: str) -> None:
    # boto3 turns a key ending in ${filename} into ["starts-with", "$key", "user/7/"].
    post = s3.generate_presigned_post(
        bucket,
        "user/7/${filename}",
        Fields={"Content-Type": "image/png", "x-amz-meta-tag": "anything"},
        Conditions=[
            ["starts-with", "$Content-Type", "image/"],
            ["starts-with", "$x-amz-meta-tag", ""],  # an empty prefix allows any value
        ],
        ExpiresIn=60,
    )

    outside = assert_refused(upload(http, post, key="user/8/b.jpg"), 403, "AccessDenied", s3, bucket)
    assert outside["Message"].endswith('Policy Condition failed: ["starts-with", "$key", "user/7/"]')
    not_image = upload(http, post, **{"Content-Type": "text/plain"})
    error = assert_refused(not_image, 403, "AccessDenied", s3, bucket)
    assert error["Message"].endswith('Policy Condition failed: ["starts-with", "$Content-Type", "image/"]')

    assert upload(http, post, key="user/7/b.jpg", **{"x-amz-meta-tag": ""}).status_code == 204
    assert keys(s3, bucket) == ["user/7/b.jpg"]


def test_x_ignore_fields_need_no_condition(s3: Any, http: requests.Session, bucket: str) -> None:
    response = upload(http, ticket(s3, bucket), **{"x-ignore-client": "ios 17"})

    assert response.status_code == 204


def test_success_action_status_is_answered_by_moto(s3: Any, http: requests.Session, bucket: str) -> None:
    status = {"success_action_status": "201"}  # a field, so the policy must name it too
    post = ticket(s3, bucket, fields=status, conditions=[status])

    assert upload(http, post).status_code == 201
    assert keys(s3, bucket) == ["temp/0b6f5a4e"]


# --- refusals -----------------------------------------------------------------------------------------------


def test_too_large(s3: Any, http: requests.Session, bucket: str) -> None:
    response = upload(http, ticket(s3, bucket, max_size=10), data=b"x" * 100)

    error = assert_refused(response, 400, "EntityTooLarge", s3, bucket)
    assert (error["ProposedSize"], error["MaxSizeAllowed"]) == ("100", "10")


def test_too_small(s3: Any, http: requests.Session, bucket: str) -> None:
    error = assert_refused(upload(http, ticket(s3, bucket), data=b""), 400, "EntityTooSmall", s3, bucket)
    assert (error["ProposedSize"], error["MinSizeAllowed"]) == ("0", "1")


def test_other_content_type(s3: Any, http: requests.Session, bucket: str) -> None:
    response = upload(http, ticket(s3, bucket), **{"Content-Type": "text/html"})

    error = assert_refused(response, 403, "AccessDenied", s3, bucket)
    assert error["Message"] == (
        'Invalid according to Policy: Policy Condition failed: ["eq", "$Content-Type", "image/jpeg"]'
    )


def test_other_key(s3: Any, http: requests.Session, bucket: str) -> None:
    response = upload(http, ticket(s3, bucket), key="public/evil.jpg")

    error = assert_refused(response, 403, "AccessDenied", s3, bucket)
    assert "Policy Condition failed" in error["Message"]
    assert "$key" in error["Message"]


def test_expired_policy(s3: Any, http: requests.Session, bucket: str) -> None:
    response = upload(http, ticket(s3, bucket, expires=-1))

    error = assert_refused(response, 403, "AccessDenied", s3, bucket)
    assert error["Message"] == "Invalid according to Policy: Policy expired."


def test_tampered_policy(s3: Any, http: requests.Session, bucket: str) -> None:
    post = ticket(s3, bucket, max_size=10)
    document = json.loads(base64.b64decode(post["fields"]["policy"]))
    document["conditions"] = [
        ["content-length-range", 1, 10**9] if isinstance(c, list) and c[0] == "content-length-range" else c
        for c in document["conditions"]
    ]
    widened = base64.b64encode(json.dumps(document).encode()).decode()

    response = upload(http, post, data=b"x" * 100, policy=widened)

    error = assert_refused(response, 403, "SignatureDoesNotMatch", s3, bucket)
    assert error["StringToSign"] == widened


def test_zeroed_signature(s3: Any, http: requests.Session, bucket: str) -> None:
    response = upload(http, ticket(s3, bucket), **{"x-amz-signature": "0" * 64})

    assert_refused(response, 403, "SignatureDoesNotMatch", s3, bucket)


def test_unknown_access_key(gate_url: str, s3: Any, http: requests.Session, bucket: str) -> None:
    stranger = s3_client(gate_url, access_key="AKIASTRANGER")

    error = assert_refused(upload(http, ticket(stranger, bucket)), 403, "InvalidAccessKeyId", s3, bucket)
    assert error["AWSAccessKeyId"] == "AKIASTRANGER"


def test_sigv2_ticket_is_refused(gate_url: str, s3: Any, http: requests.Session, bucket: str) -> None:
    # boto3's default for presigned POST is SigV2; the broker must ask for s3v4 (DESIGN.md).
    legacy = s3_client(gate_url, config=Config(s3={"addressing_style": "path"}))

    assert_refused(upload(http, ticket(legacy, bucket)), 400, "InvalidRequest", s3, bucket)


def test_extra_input_field(s3: Any, http: requests.Session, bucket: str) -> None:
    response = upload(http, ticket(s3, bucket), **{"x-amz-meta-owner": "mallory"})

    error = assert_refused(response, 403, "AccessDenied", s3, bucket)
    assert error["Message"] == "Invalid according to Policy: Extra input fields: x-amz-meta-owner"


def test_wrong_bucket_in_url(s3: Any, http: requests.Session, bucket: str, gate_url: str) -> None:
    other = f"{bucket}-other"
    s3.create_bucket(Bucket=other)

    response = upload(http, ticket(s3, bucket), url=f"{gate_url}/{other}")

    error = assert_refused(response, 403, "AccessDenied", s3, other)
    assert f'["eq", "$bucket", "{bucket}"]' in error["Message"]
    assert keys(s3, bucket) == []


def test_file_must_be_the_last_field(s3: Any, http: requests.Session, bucket: str) -> None:
    post = ticket(s3, bucket)
    parts = [(name, (None, value)) for name, value in post["fields"].items()]
    trailing = [*parts, ("file", ("a.jpg", JPEG)), ("x-ignore-note", (None, "late"))]

    error = assert_refused(http.post(post["url"], files=trailing), 400, "InvalidArgument", s3, bucket)
    assert "last field" in error["Message"]


def test_fields_after_the_file_are_not_seen_by_the_policy(
    s3: Any, http: requests.Session, bucket: str
) -> None:
    post = ticket(s3, bucket)
    parts = [(name, (None, value)) for name, value in post["fields"].items() if name != "Content-Type"]
    late_type = [*parts, ("file", ("a.jpg", JPEG)), ("Content-Type", (None, "image/jpeg"))]

    error = assert_refused(http.post(post["url"], files=late_type), 403, "AccessDenied", s3, bucket)
    assert '["eq", "$Content-Type", "image/jpeg"]' in error["Message"]


def test_missing_file(s3: Any, http: requests.Session, bucket: str) -> None:
    post = ticket(s3, bucket)
    parts = [(name, (None, value)) for name, value in post["fields"].items()]

    error = assert_refused(http.post(post["url"], files=parts), 400, "InvalidArgument", s3, bucket)
    assert error["ArgumentName"] == "file"


def test_duplicate_field_is_refused(s3: Any, http: requests.Session, bucket: str) -> None:
    post = ticket(s3, bucket)
    parts = [(name, (None, value)) for name, value in post["fields"].items()]
    parts += [("KEY", (None, "public/evil.jpg")), ("file", ("a.jpg", JPEG))]

    assert_refused(http.post(post["url"], files=parts), 400, "InvalidArgument", s3, bucket)


def test_form_without_a_policy_is_anonymous_and_denied(s3: Any, http: requests.Session, bucket: str) -> None:
    response = http.post(f"{s3.meta.endpoint_url}/{bucket}", data={"key": "temp/a"}, files={"file": JPEG})

    assert_refused(response, 403, "AccessDenied", s3, bucket)


def test_fields_before_the_file_are_limited_to_20_kb(s3: Any, http: requests.Session, bucket: str) -> None:
    response = upload(http, ticket(s3, bucket), **{"x-ignore-padding": "p" * 21_000})

    assert_refused(response, 400, "MaxPostPreDataLengthExceeded", s3, bucket)


def test_malformed_multipart(s3: Any, http: requests.Session, bucket: str, gate_url: str) -> None:
    response = http.post(
        f"{gate_url}/{bucket}",
        data=b'--xyz\r\nContent-Disposition: form-data; name="key"\r\n\r\ntemp/a',  # never closed
        headers={"Content-Type": "multipart/form-data; boundary=xyz"},
    )

    assert_refused(response, 400, "MalformedPOSTRequest", s3, bucket)


# --- everything else passes through -------------------------------------------------------------------------


def test_rest_calls_pass_through(s3: Any, bucket: str) -> None:
    s3.put_object(Bucket=bucket, Key="a/one.txt", Body=b"one", ContentType="text/plain")
    s3.put_object(Bucket=bucket, Key="a/two.txt", Body=b"two")

    assert s3.get_object(Bucket=bucket, Key="a/one.txt")["Body"].read() == b"one"
    assert s3.head_object(Bucket=bucket, Key="a/one.txt")["ContentLength"] == 3
    assert s3.get_object(Bucket=bucket, Key="a/one.txt", Range="bytes=1-")["Body"].read() == b"ne"
    assert keys(s3, bucket) == ["a/one.txt", "a/two.txt"]
    with pytest.raises(s3.exceptions.NoSuchKey):
        s3.get_object(Bucket=bucket, Key="a/missing.txt")

    s3.delete_object(Bucket=bucket, Key="a/one.txt")
    s3.delete_objects(Bucket=bucket, Delete={"Objects": [{"Key": "a/two.txt"}]})  # POST ?delete
    assert keys(s3, bucket) == []


def test_multipart_upload_passes_through(s3: Any, bucket: str) -> None:
    part = b"p" * (5 * 1024 * 1024)
    started = s3.create_multipart_upload(Bucket=bucket, Key="video.mp4")  # POST ?uploads
    etags = [
        s3.upload_part(Bucket=bucket, Key="video.mp4", UploadId=started["UploadId"], PartNumber=n, Body=body)[
            "ETag"
        ]
        for n, body in ((1, part), (2, b"tail"))
    ]
    s3.complete_multipart_upload(
        Bucket=bucket,
        Key="video.mp4",
        UploadId=started["UploadId"],
        MultipartUpload={"Parts": [{"ETag": etag, "PartNumber": n} for n, etag in enumerate(etags, 1)]},
    )

    assert s3.head_object(Bucket=bucket, Key="video.mp4")["ContentLength"] == len(part) + 4


def test_chunked_bodies_pass_through(s3: Any, http: requests.Session, bucket: str) -> None:
    url = s3.generate_presigned_url("put_object", Params={"Bucket": bucket, "Key": "chunked.txt"})

    response = http.put(url, data=(b"part-%d;" % n for n in range(3)))  # Transfer-Encoding: chunked

    assert response.status_code == 200
    assert response.headers["ETag"] == f'"{hashlib.md5(b"part-0;part-1;part-2;").hexdigest()}"'
    assert s3.get_object(Bucket=bucket, Key="chunked.txt")["Body"].read() == b"part-0;part-1;part-2;"


def test_keys_keep_their_encoding(s3: Any, bucket: str) -> None:
    key = "temp/a b+c%2Fd/é.jpg"
    s3.put_object(Bucket=bucket, Key=key, Body=b"x")

    assert keys(s3, bucket) == [key]
    assert s3.get_object(Bucket=bucket, Key=key)["Body"].read() == b"x"


def test_other_services_pass_through(gate_url: str) -> None:
    # moto routes by the credential scope of the Authorization header, which the gate forwards as is.
    sns = boto3.client(
        "sns",
        endpoint_url=gate_url,
        region_name=REGION,
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
    )
    arn = sns.create_topic(Name=f"gate-{uuid.uuid4().hex[:8]}")["TopicArn"]

    assert arn in [topic["TopicArn"] for topic in sns.list_topics()["Topics"]]


# --- memory -------------------------------------------------------------------------------------------------

BIG = 50 * 1024 * 1024
MAX_RSS_GROWTH = 20 * 1024 * 1024


def peak_rss(pid: int) -> int:
    """VmHWM: the process's resident-set high-water mark, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) * 1024
    raise AssertionError("no VmHWM")


def write_form(path: Path, fields: dict[str, str], size: int) -> tuple[str, str]:
    """A multipart body on disk (so the client does not hold it either); returns its boundary and MD5."""
    boundary = uuid.uuid4().hex
    md5 = hashlib.md5()
    block = bytes(range(256)) * 256
    with path.open("wb") as out:
        for name, value in fields.items():
            out.write(
                f'--{boundary}\r\nContent-Disposition: form-data; name="{name}"\r\n\r\n{value}\r\n'.encode()
            )
        out.write(
            f'--{boundary}\r\nContent-Disposition: form-data; name="file"; filename="big.bin"\r\n\r\n'.encode()
        )
        for _ in range(size // len(block)):
            out.write(block)
            md5.update(block)
        out.write(f"\r\n--{boundary}--\r\n".encode())
    return boundary, md5.hexdigest()


@pytest.fixture
def gate_process(moto_url: str) -> Iterator[tuple[str, int]]:
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "app.devstack.policy_gate",
            "--upstream",
            moto_url,
            "--credentials",
            f"{ACCESS_KEY}:{SECRET_KEY}",
        ],
        cwd=REPO,
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


def download_md5(http: requests.Session, s3: Any, bucket: str, key: str) -> str:
    url = s3.generate_presigned_url("get_object", Params={"Bucket": bucket, "Key": key})
    digest = hashlib.md5()
    with http.get(url, stream=True) as response:
        for chunk in response.iter_content(1024 * 1024):
            digest.update(chunk)
    return digest.hexdigest()


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads peak RSS from /proc")
def test_50_mb_upload_streams_with_bounded_memory(
    gate_process: tuple[str, int], http: requests.Session, bucket: str, tmp_path: Path
) -> None:
    url, pid = gate_process
    via_process = s3_client(url)
    assert upload(http, ticket(via_process, bucket, key="temp/warm-up")).status_code == 204
    baseline = peak_rss(pid)  # imports and buffers are in place by now

    post = ticket(via_process, bucket, key="temp/big", content_type="video/mp4", max_size=BIG)
    form = tmp_path / "form"
    boundary, md5 = write_form(form, post["fields"], BIG)
    with form.open("rb") as body:
        content_type = f"multipart/form-data; boundary={boundary}"
        response = http.post(post["url"], data=body, headers={"Content-Type": content_type})
    assert response.status_code == 204, response.text
    assert download_md5(http, via_process, bucket, "temp/big") == md5  # and back, through the gate too

    growth = peak_rss(pid) - baseline
    assert growth < MAX_RSS_GROWTH, f"gate peak RSS grew {growth / 2**20:.1f} MiB for a 50 MiB upload"
    head = via_process.head_object(Bucket=bucket, Key="temp/big")
    assert (head["ContentLength"], head["ContentType"]) == (BIG, "video/mp4")


# --- the signing rule itself --------------------------------------------------------------------------------


def test_signature_matches_the_aws_documented_example() -> None:
    """AWS's "Example: Browser-Based Upload using HTTP POST (Using AWS Signature Version 4)"."""
    policy = (
        "eyAiZXhwaXJhdGlvbiI6ICIyMDE1LTEyLTMwVDEyOjAwOjAwLjAwMFoiLA0KICAiY29uZGl0aW9ucyI6IFsNCiAgICB7ImJ1Y2tldCI6"
        "ICJzaWd2NGV4YW1wbGVidWNrZXQifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRrZXkiLCAidXNlci91c2VyMS8iXSwNCiAgICB7ImFj"
        "bCI6ICJwdWJsaWMtcmVhZCJ9LA0KICAgIHsic3VjY2Vzc19hY3Rpb25fcmVkaXJlY3QiOiAiaHR0cDovL3NpZ3Y0ZXhhbXBsZWJ1Y2tl"
        "dC5zMy5hbWF6b25hd3MuY29tL3N1Y2Nlc3NmdWxfdXBsb2FkLmh0bWwifSwNCiAgICBbInN0YXJ0cy13aXRoIiwgIiRDb250ZW50LVR5"
        "cGUiLCAiaW1hZ2UvIl0sDQogICAgeyJ4LWFtei1tZXRhLXV1aWQiOiAiMTQzNjUxMjM2NTEyNzQifSwNCiAgICB7IngtYW16LXNlcnZl"
        "ci1zaWRlLWVuY3J5cHRpb24iOiAiQUVTMjU2In0sDQogICAgWyJzdGFydHMtd2l0aCIsICIkeC1hbXotbWV0YS10YWciLCAiIl0sDQoN"
        "CiAgICB7IngtYW16LWNyZWRlbnRpYWwiOiAiQUtJQUlPU0ZPRE5ON0VYQU1QTEUvMjAxNTEyMjkvdXMtZWFzdC0xL3MzL2F3czRfcmVx"
        "dWVzdCJ9LA0KICAgIHsieC1hbXotYWxnb3JpdGhtIjogIkFXUzQtSE1BQy1TSEEyNTYifSwNCiAgICB7IngtYW16LWRhdGUiOiAiMjAx"
        "NTEyMjlUMDAwMDAwWiIgfQ0KICBdDQp9"
    )
    scope = CredentialScope.parse("AKIAIOSFODNN7EXAMPLE/20151229/us-east-1/s3/aws4_request")

    signature = policy_signature("wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY", scope, policy)

    assert signature == "8afdbf4008c03f22c2cd3cdb72e4afbb1f6a588f3255ac628749a66d7f09699e"


def test_starts_with_content_type_lists_match_item_by_item() -> None:
    # AWS: a comma-separated Content-Type in a starts-with condition is a list; every item must match.
    condition = Condition("starts-with", "Content-Type", "image/")

    assert condition.matches("image/jpeg, image/png")
    assert not condition.matches("image/jpeg,text/html")
