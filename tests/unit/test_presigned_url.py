"""The presigned-URL rule itself, without a server: AWS's documented example and botocore's own URLs."""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any
from urllib.parse import urlsplit

import boto3
import pytest
from botocore.config import Config

from app.devstack.post_policy import S3Error
from app.devstack.presigned_url import HttpRequest, authorize_presigned

ACCESS_KEY, SECRET_KEY = "AKIAIOSFODNN7EXAMPLE", "wJalrXUtnFEMI/K7MDENG/bPxRfiCYEXAMPLEKEY"
CREDENTIALS = {ACCESS_KEY: SECRET_KEY}
HOST = "127.0.0.1:9000"


def signer() -> Any:
    return boto3.client(
        "s3",
        endpoint_url=f"http://{HOST}",
        region_name="us-east-1",
        aws_access_key_id=ACCESS_KEY,
        aws_secret_access_key=SECRET_KEY,
        config=Config(signature_version="s3v4", s3={"addressing_style": "path"}),
    )


def request_for(url: str, method: str = "GET", **headers: str) -> HttpRequest:
    parts = urlsplit(url)
    return HttpRequest(method, f"{parts.path}?{parts.query}", {"host": parts.netloc, **headers})


def test_the_aws_documented_example_verifies() -> None:
    """AWS S3 API reference, "Authenticating Requests: Using Query Parameters (AWS Signature Version 4)"."""
    target = (
        "/test.txt?X-Amz-Algorithm=AWS4-HMAC-SHA256"
        "&X-Amz-Credential=AKIAIOSFODNN7EXAMPLE%2F20130524%2Fus-east-1%2Fs3%2Faws4_request"
        "&X-Amz-Date=20130524T000000Z&X-Amz-Expires=86400&X-Amz-SignedHeaders=host"
        "&X-Amz-Signature=aeeed9bbccd4d02ee5c0109b86d86835f995330da4c265957d157751f604d404"
    )
    request = HttpRequest("GET", target, {"host": "examplebucket.s3.amazonaws.com"})

    accepted = authorize_presigned(request, CREDENTIALS, datetime(2013, 5, 24, 12, tzinfo=UTC))

    assert accepted is not None
    assert accepted.expires_at == datetime(2013, 5, 25, tzinfo=UTC)
    with pytest.raises(S3Error) as expired:  # one second after its 86400 s
        authorize_presigned(request, CREDENTIALS, datetime(2013, 5, 25, 0, 0, 1, tzinfo=UTC))
    assert (expired.value.status, expired.value.code) == (403, "AccessDenied")


def test_requests_without_query_auth_are_not_its_business() -> None:
    request = HttpRequest("GET", "/bucket/key?uploads&list-type=2", {"host": HOST, "authorization": "x"})

    assert authorize_presigned(request, CREDENTIALS, datetime.now(UTC)) is None


def test_botocore_urls_with_awkward_keys_and_values_verify() -> None:
    url = signer().generate_presigned_url(
        "get_object",
        Params={
            "Bucket": "media",
            "Key": "private/a b+c%2F~é/ü.pdf",
            "ResponseContentDisposition": "attachment; filename*=UTF-8''%C3%BC.pdf",
        },
        ExpiresIn=60,
    )

    assert authorize_presigned(request_for(url), CREDENTIALS, datetime.now(UTC)) is not None


def test_a_signed_content_length_is_returned_and_binding() -> None:
    url = signer().generate_presigned_url(
        "upload_part",
        Params={"Bucket": "media", "Key": "temp/x", "UploadId": "u", "PartNumber": 1, "ContentLength": 7},
    )

    accepted = authorize_presigned(
        request_for(url, "PUT", **{"content-length": "7"}), CREDENTIALS, datetime.now(UTC)
    )
    assert accepted is not None and accepted.signed_content_length == 7
    for headers in ({"content-length": "8"}, {}):  # another length; no length at all (a chunked body)
        with pytest.raises(S3Error) as refused:
            authorize_presigned(request_for(url, "PUT", **headers), CREDENTIALS, datetime.now(UTC))
        assert refused.value.code == "SignatureDoesNotMatch"


def test_the_method_is_signed() -> None:
    url = signer().generate_presigned_url("get_object", Params={"Bucket": "media", "Key": "a"})

    with pytest.raises(S3Error) as refused:
        authorize_presigned(request_for(url, "DELETE"), CREDENTIALS, datetime.now(UTC))
    assert refused.value.code == "SignatureDoesNotMatch"


def test_sigv2_query_auth_is_not_supported() -> None:
    request = HttpRequest(
        "GET", "/media/a?AWSAccessKeyId=AKIA&Expires=1700000000&Signature=abc", {"host": HOST}
    )

    with pytest.raises(S3Error) as refused:
        authorize_presigned(request, CREDENTIALS, datetime.now(UTC))
    assert (refused.value.status, refused.value.code) == (400, "InvalidRequest")


def test_the_credential_date_must_be_the_signing_date() -> None:
    url = signer().generate_presigned_url("get_object", Params={"Bucket": "media", "Key": "a"})
    signed_on = url.split("X-Amz-Date=")[1][:8]
    forged = url.replace(f"%2F{signed_on}%2F", "%2F20000101%2F")
    assert forged != url

    with pytest.raises(S3Error) as refused:
        authorize_presigned(request_for(forged), CREDENTIALS, datetime.now(UTC))
    assert refused.value.code == "AuthorizationQueryParametersError"
