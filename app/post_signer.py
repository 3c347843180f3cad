"""Presigned POST policies signed without boto3's per-call machinery (see `PostSigner`)."""

from __future__ import annotations

import base64
import hmac
import json
from datetime import UTC, datetime, timedelta
from hashlib import sha256
from typing import Any

from botocore.credentials import Credentials


class PostSigner:
    """SigV4 POST policies (https://docs.aws.amazon.com/AmazonS3/latest/API/sigv4-HTTPPOSTConstructPolicy.html)
    as botocore's `S3SigV4PostAuth` builds them, with what does not change between tickets kept per process:
    the form's URL (it names the bucket, never the key) and the day's signing key (derived by four HMACs from
    the secret, the date, the region and the service). Credentials are read on every call, so rotated or
    refreshed ones (an instance role) are used as soon as boto3 has them."""

    SERVICE = "s3"

    def __init__(self, bucket: str, region: str, credentials: Credentials, url: str) -> None:
        self.bucket = bucket
        self.region = region
        self.credentials = credentials
        self.url = url  # the form's address: boto3's, resolved once (it names the bucket, never a key)
        self._signing_key: tuple[tuple[str, str], bytes] | None = None  # ((secret, date), key)

    def sign(
        self, key: str, fields: dict[str, str], conditions: list[object], expires_in: int
    ) -> dict[str, Any]:
        credentials = self.credentials.get_frozen_credentials()
        now = datetime.now(UTC).replace(tzinfo=None)
        timestamp, date = now.strftime("%Y%m%dT%H%M%SZ"), now.strftime("%Y%m%d")
        scope = f"{credentials.access_key}/{date}/{self.region}/{self.SERVICE}/aws4_request"
        fields = {**fields, "key": key}
        fields.update(
            {"x-amz-algorithm": "AWS4-HMAC-SHA256", "x-amz-credential": scope, "x-amz-date": timestamp}
        )
        conditions = [
            *conditions,
            {"bucket": self.bucket},
            {"key": key},
            {"x-amz-algorithm": "AWS4-HMAC-SHA256"},
            {"x-amz-credential": scope},
            {"x-amz-date": timestamp},
        ]
        if credentials.token is not None:
            fields["x-amz-security-token"] = credentials.token
            conditions.append({"x-amz-security-token": credentials.token})
        expiration = (now + timedelta(seconds=expires_in)).strftime("%Y-%m-%dT%H:%M:%SZ")
        policy = base64.b64encode(json.dumps({"expiration": expiration, "conditions": conditions}).encode())
        fields["policy"] = policy.decode()
        fields["x-amz-signature"] = hmac.new(
            self._key(credentials.secret_key, date), policy, sha256
        ).hexdigest()
        return {"url": self.url, "fields": fields}

    def _key(self, secret: str, date: str) -> bytes:
        cached = self._signing_key
        if cached is not None and cached[0] == (secret, date):
            return cached[1]
        key = f"AWS4{secret}".encode()
        for part in (date, self.region, self.SERVICE, "aws4_request"):
            key = hmac.new(key, part.encode(), sha256).digest()
        self._signing_key = ((secret, date), key)
        return key
