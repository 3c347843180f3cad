"""The one boto3 facade. Everything the broker does to S3 goes through `Storage`.

Resumable uploads are S3 multipart uploads at the upload's `temp/<id>` key: the API creates one
(`s3:PutObject`), hands out presigned `UploadPart` URLs that sign each part's exact length (`s3:PutObject`),
lists the parts the store holds so a client can resume (`s3:ListMultipartUploadParts`), completes it once the
parts add up to the declared size (`s3:PutObject`) or aborts it (`s3:AbortMultipartUpload`); clean-up lists
stale ones (`s3:ListBucketMultipartUploads`). Parts are invisible until completion: only the completed
object raises the `ObjectCreated:CompleteMultipartUpload` event.

The client is pinned to SigV4: boto3's default for presigned POST is the legacy SigV2 (`AWSAccessKeyId` /
`signature` fields), which S3 buckets created after June 2020 refuse.

Two endpoints: what clients are sent to (`s3_endpoint_url`: every presigned URL and public link names it) and
where the broker's own requests go (`s3_internal_endpoint_url`, default the same): a store on a private
network or a VPC endpoint, and locally moto itself, past the policy gate that only checks what clients send.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Any

import boto3
import boto3.session
from boto3.s3.transfer import TransferConfig
from botocore.config import Config
from botocore.exceptions import ClientError, NoCredentialsError

from app.config import Settings
from app.domain.keys import PUBLIC_PREFIX, TEMP_PREFIX, upload_id_from_temp_key
from app.domain.multipart import StoredPart
from app.post_signer import PostSigner

NOT_FOUND_CODES = frozenset({"404", "NoSuchKey", "NotFound"})
DELETE_BATCH = 1000  # DeleteObjects takes at most 1000 keys per request
MiB = 1024 * 1024
DOWNLOAD_CHUNK = 1 * MiB
# Files above 64 MiB (videos) go up as multipart uploads of 16 MiB parts, 4 at a time: a 1 GiB rendition never
# needs one 1 GiB request (S3's single PUT limit is 5 GiB, but one lost connection would restart it all).
UPLOAD_TRANSFER = TransferConfig(
    multipart_threshold=64 * MiB, multipart_chunksize=16 * MiB, max_concurrency=4
)


@dataclass(frozen=True)
class ObjectHead:
    size: int
    etag: str
    content_type: str | None


@dataclass(frozen=True)
class MultipartUpload:
    key: str
    upload_id: str
    initiated: datetime


@dataclass(frozen=True)
class TempObject:
    key: str
    last_modified: datetime
    etag: str

    @property
    def upload_id(self) -> str | None:
        return upload_id_from_temp_key(self.key)


class Storage:
    def __init__(self, settings: Settings) -> None:
        self.bucket = settings.s3_bucket
        # Public media may live in a bucket of their own, so private media never share a bucket policy with
        # what the CDN serves. `temp/` and `private/` always stay in `bucket`.
        self.public_bucket = settings.s3_public_bucket or settings.s3_bucket
        self.region = settings.s3_region
        self.endpoint_url = settings.s3_endpoint_url
        self.public_base_url = settings.public_base_url
        # A session of our own: its credentials are the client's (the same cached, refreshable object),
        # which `PostSigner` signs with.
        self.session = boto3.session.Session()
        self._post_signer: PostSigner | None = None
        self._probe: Any = None  # the readiness check's client (`check`)
        # Signs what clients get (presigned URLs name its endpoint); makes no requests of its own.
        self.presigner: Any = self._client(settings.s3_endpoint_url)
        internal = settings.s3_internal_endpoint_url
        own_endpoint = internal if internal and internal != settings.s3_endpoint_url else None
        # The broker's own requests: objects, multipart bookkeeping, clean-up, readiness.
        self.client: Any = self._client(own_endpoint) if own_endpoint else self.presigner
        self._own_endpoint = own_endpoint or settings.s3_endpoint_url

    def _client(self, endpoint_url: str | None, overrides: Config | None = None) -> Any:
        config = Config(
            signature_version="s3v4",
            # A custom endpoint (MinIO, the local stack) serves buckets by path, not by host name.
            s3={"addressing_style": "path" if endpoint_url else "auto"},
            retries={"mode": "standard", "max_attempts": 3},
            connect_timeout=5,
            read_timeout=60,
        )
        return self.session.client(
            "s3",
            endpoint_url=endpoint_url,
            region_name=self.region,
            config=config.merge(overrides) if overrides else config,
        )

    def bucket_of(self, key: str) -> str:
        """The bucket a key lives in: `public/...` in the public bucket (when one is configured)."""
        return self.public_bucket if key.startswith(PUBLIC_PREFIX) else self.bucket

    # --- tickets and links -------------------------------------------------------------------------------
    def presign_post(
        self, key: str, content_type: str, conditions: list[object], expires_in: int
    ) -> dict[str, Any]:
        """A browser POST policy; `conditions` must pin everything the client may not change.

        Signed by `PostSigner`, field for field what boto3's `generate_presigned_post` returns, at a tenth of
        its cost (boto3 resolves the endpoint and runs its event chain on every call)."""
        if self._post_signer is None:
            credentials = self.session.get_credentials()
            if credentials is None:
                raise NoCredentialsError()
            url = self.presign_post_boto3("temp/url-probe", {}, [], 60)["url"]
            self._post_signer = PostSigner(self.bucket, self.presigner.meta.region_name, credentials, url)
        return self._post_signer.sign(key, {"Content-Type": content_type}, conditions, expires_in)

    def presign_post_boto3(
        self, key: str, fields: dict[str, str], conditions: list[object], expires_in: int
    ) -> dict[str, Any]:
        """boto3's own presigned POST: the reference `PostSigner` is checked against, and its URL."""
        return self.presigner.generate_presigned_post(  # type: ignore[no-any-return]
            Bucket=self.bucket, Key=key, Fields=fields, Conditions=conditions, ExpiresIn=expires_in
        )

    def presign_get(self, key: str, expires_in: int, content_disposition: str | None = None) -> str:
        """A GET link; `content_disposition` is signed into it and answered by the store as the header."""
        params = {"Bucket": self.bucket_of(key), "Key": key}
        if content_disposition:
            params["ResponseContentDisposition"] = content_disposition
        return self.presigner.generate_presigned_url(  # type: ignore[no-any-return]
            "get_object", Params=params, ExpiresIn=expires_in
        )

    def presign_upload_part(
        self, key: str, multipart_id: str, part_number: int, length: int, expires_in: int
    ) -> str:
        """A PUT URL for one part; `Content-Length` is a signed header, so only exactly `length` bytes fit."""
        return self.presigner.generate_presigned_url(  # type: ignore[no-any-return]
            "upload_part",
            Params={
                "Bucket": self.bucket,
                "Key": key,
                "UploadId": multipart_id,
                "PartNumber": part_number,
                "ContentLength": length,
            },
            ExpiresIn=expires_in,
        )

    def public_url(self, key: str) -> str:
        """The CDN URL when one is configured, else the bucket's own URL."""
        if self.public_base_url:
            return f"{self.public_base_url.rstrip('/')}/{key}"
        if self.endpoint_url:
            return f"{self.endpoint_url.rstrip('/')}/{self.bucket_of(key)}/{key}"
        return f"https://{self.bucket_of(key)}.s3.{self.region}.amazonaws.com/{key}"

    # --- objects -----------------------------------------------------------------------------------------
    def head(self, key: str) -> ObjectHead | None:
        try:
            response = self.client.head_object(Bucket=self.bucket_of(key), Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in NOT_FOUND_CODES:
                return None
            raise
        return ObjectHead(response["ContentLength"], response["ETag"].strip('"'), response.get("ContentType"))

    def download(self, key: str, destination: Path) -> None:
        """Stream an object to a local file (never into memory: videos are up to 1 GiB)."""
        with destination.open("wb") as sink:
            self.client.download_fileobj(self.bucket_of(key), key, sink)

    def download_within(self, key: str, destination: Path, max_bytes: int) -> int | None:
        """One GET: the object's size, its body streamed to `destination` only when that size is between 1
        and `max_bytes` (a bigger one is not read); None when there is no such object.

        The size is the stored object's own (`Content-Length` of this very response), so no HEAD is needed
        first and no replacement can slip in between a HEAD and a GET; the copy stops at `max_bytes` anyway.
        """
        try:
            response = self.client.get_object(Bucket=self.bucket_of(key), Key=key)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") in NOT_FOUND_CODES:
                return None
            raise
        size: int = response["ContentLength"]
        body = response["Body"]
        try:
            if 0 < size <= max_bytes:
                written = 0
                with destination.open("wb") as sink:
                    for chunk in body.iter_chunks(DOWNLOAD_CHUNK):
                        written += len(chunk)
                        if written > max_bytes:
                            return written
                        sink.write(chunk)
        finally:
            body.close()
        return size

    def put(
        self, key: str, body: bytes, content_type: str, cache_control: str, metadata: dict[str, str]
    ) -> None:
        self.client.put_object(
            Bucket=self.bucket_of(key),
            Key=key,
            Body=body,
            ContentType=content_type,
            CacheControl=cache_control,
            Metadata=metadata,
        )

    def upload_file(
        self, key: str, path: Path, content_type: str, cache_control: str, metadata: dict[str, str]
    ) -> None:
        """Stream a local file to `key` (multipart when big); the file is never read whole into memory.

        Below the multipart threshold (every image, poster and PDF) it is one PutObject from the open file:
        the transfer manager's threads and futures would cost more than the request itself."""
        extra = {"ContentType": content_type, "CacheControl": cache_control, "Metadata": metadata}
        if path.stat().st_size < UPLOAD_TRANSFER.multipart_threshold:
            with path.open("rb") as body:
                self.client.put_object(Bucket=self.bucket_of(key), Key=key, Body=body, **extra)
            return
        self.client.upload_file(
            str(path),
            self.bucket_of(key),
            key,
            ExtraArgs=extra,
            Config=UPLOAD_TRANSFER,
        )

    def delete(self, key: str) -> None:
        """Idempotent: deleting a missing key is not an error in S3."""
        self.client.delete_object(Bucket=self.bucket_of(key), Key=key)

    # --- multipart uploads ------------------------------------------------------------------------------
    def create_multipart(self, key: str, content_type: str, metadata: dict[str, str]) -> str:
        response = self.client.create_multipart_upload(
            Bucket=self.bucket, Key=key, ContentType=content_type, Metadata=metadata
        )
        return response["UploadId"]  # type: ignore[no-any-return]

    def list_parts(self, key: str, multipart_id: str) -> list[StoredPart] | None:
        """The parts the store holds, in order; None when the multipart upload is gone (completed, aborted)."""
        parts: list[StoredPart] = []
        paginator = self.client.get_paginator("list_parts")
        try:
            for page in paginator.paginate(Bucket=self.bucket, Key=key, UploadId=multipart_id):
                parts.extend(
                    StoredPart(part["PartNumber"], part["ETag"].strip('"'), part["Size"])
                    for part in page.get("Parts", [])
                )
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") == "NoSuchUpload":
                return None
            raise
        return parts

    def complete_multipart(self, key: str, multipart_id: str, parts: list[StoredPart]) -> str:
        """Join the parts into the object; returns its ETag."""
        response = self.client.complete_multipart_upload(
            Bucket=self.bucket,
            Key=key,
            UploadId=multipart_id,
            MultipartUpload={"Parts": [{"PartNumber": p.number, "ETag": f'"{p.etag}"'} for p in parts]},
        )
        return str(response.get("ETag", "")).strip('"')

    def abort_multipart(self, key: str, multipart_id: str) -> None:
        """Idempotent: an upload already completed or aborted is not an error."""
        try:
            self.client.abort_multipart_upload(Bucket=self.bucket, Key=key, UploadId=multipart_id)
        except ClientError as error:
            if error.response.get("Error", {}).get("Code") != "NoSuchUpload":
                raise

    def list_temp_multipart_uploads(self) -> Iterator[MultipartUpload]:
        """Every incomplete multipart upload under `temp/`."""
        paginator = self.client.get_paginator("list_multipart_uploads")
        for page in paginator.paginate(Bucket=self.bucket, Prefix=TEMP_PREFIX):
            for item in page.get("Uploads", []):
                yield MultipartUpload(item["Key"], item["UploadId"], item["Initiated"])

    def list_temp_pages(self) -> Iterator[list[TempObject]]:
        """Every object under `temp/`, a page (<= 1000) at a time.

        ListObjectsV2 continues after the last key it returned, so deleting listed keys between pages is safe.
        """
        paginator = self.client.get_paginator("list_objects_v2")
        pages = paginator.paginate(
            Bucket=self.bucket, Prefix=TEMP_PREFIX, PaginationConfig={"PageSize": 1000}
        )
        for page in pages:
            yield [
                TempObject(item["Key"], item["LastModified"], item.get("ETag", "").strip('"'))
                for item in page.get("Contents", [])
            ]

    def delete_many(self, keys: list[str]) -> dict[str, str]:
        """DeleteObjects, 1000 keys per request; returns the keys S3 refused, with its error code."""
        refused: dict[str, str] = {}
        for start in range(0, len(keys), DELETE_BATCH):
            batch = keys[start : start + DELETE_BATCH]
            response = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": key} for key in batch], "Quiet": True}
            )
            refused.update(
                {error["Key"]: error.get("Code", "unknown") for error in response.get("Errors", [])}
            )
        return refused

    def check(self, timeout_seconds: float = 1.0) -> None:
        """Raise unless the bucket answers within `timeout_seconds` (readiness): a client of its own, with no
        retries, so a stalled store is reported as down at once instead of after minutes of retries."""
        if self._probe is None:
            self._probe = self._client(
                self._own_endpoint,
                Config(
                    connect_timeout=timeout_seconds, read_timeout=timeout_seconds, retries={"max_attempts": 1}
                ),
            )
        for bucket in dict.fromkeys((self.bucket, self.public_bucket)):
            self._probe.head_bucket(Bucket=bucket)
