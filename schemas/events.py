"""Inbound event shapes: S3 event notifications, and the SNS envelope that may carry them.

Every field the broker reads is bounded and checked for characters before anything reaches the database: a
record is refused (`invalid_record`) when a field is longer than any S3 event carries, holds control characters
or is not valid Unicode (a lone surrogate), or its key, once URL-decoded, is over S3's 1,024 bytes. PostgreSQL
refuses NUL in text and over-long values with an error, which used to surface as a 500.
"""

from __future__ import annotations

import re
from typing import Annotated, Any
from urllib.parse import unquote_plus

from pydantic import AfterValidator, BaseModel, ConfigDict, Field, field_validator

# C0 controls, DEL and C1 controls: no S3 name, eTag or event name carries them.
_CONTROL = re.compile(r"[\x00-\x1f\x7f-\x9f]")
MAX_KEY_BYTES = 1024  # S3's limit on an object key, UTF-8
MAX_ENCODED_KEY_CHARS = 3 * MAX_KEY_BYTES  # every byte percent-encoded
MAX_ETAG_CHARS = 128  # the column the eTag is recorded in; S3's are 32 hex digits (-N for multipart)


def _plain_text(value: str) -> str:
    """Valid Unicode without control characters (raises ValueError, which pydantic reports)."""
    try:
        value.encode("utf-8")
    except UnicodeEncodeError:
        raise ValueError("not valid Unicode (a lone surrogate)") from None
    if _CONTROL.search(value):
        raise ValueError("contains control characters")
    return value


def _bounded(max_length: int) -> Any:
    return Annotated[str, Field(max_length=max_length), AfterValidator(_plain_text)]


class _Lenient(BaseModel):
    # Senders add fields over time (and MinIO adds its own); only what we read is required.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class S3Bucket(_Lenient):
    name: _bounded(255)  # type: ignore[valid-type]  # S3: 3-63; legacy us-east-1 names up to 255


class S3Object(_Lenient):
    key: _bounded(MAX_ENCODED_KEY_CHARS)  # type: ignore[valid-type]  # URL-encoded, '+' for spaces
    size: int | None = Field(default=None, ge=0, le=2**63 - 1)
    etag: _bounded(MAX_ETAG_CHARS) | None = Field(default=None, alias="eTag")  # type: ignore[valid-type]
    sequencer: _bounded(128) | None = None  # type: ignore[valid-type]

    @field_validator("key")
    @classmethod
    def _decoded_key(cls, key: str) -> str:
        """The key as the store names it must be a key S3 could hold, without control characters."""
        decoded = unquote_plus(key, errors="strict")
        _plain_text(decoded)
        if len(decoded.encode("utf-8")) > MAX_KEY_BYTES:
            raise ValueError(f"key over {MAX_KEY_BYTES} bytes once decoded")
        return key


class S3Entity(_Lenient):
    bucket: S3Bucket
    object: S3Object


class S3EventRecord(_Lenient):
    event_name: _bounded(128) = Field(alias="eventName")  # type: ignore[valid-type]
    s3: S3Entity


class S3Event(_Lenient):
    records: list[S3EventRecord] = Field(default_factory=list, alias="Records")
    event: str | None = Field(default=None, alias="Event")  # "s3:TestEvent" when a notification is set up


class RawS3Event(_Lenient):
    """An event whose records are checked one by one (`S3EventRecord`), so one bad record does not cost the
    others theirs."""

    records: list[Any] = Field(default_factory=list, alias="Records", max_length=1000)
    event: str | None = Field(default=None, alias="Event")


class SnsEnvelope(_Lenient):
    type: str = Field(alias="Type")
    message: str = Field(alias="Message")
    topic_arn: str = Field(alias="TopicArn")
