"""Inbound event shapes: S3 event notifications, and the SNS envelope that may carry them."""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class _Lenient(BaseModel):
    # Senders add fields over time (and MinIO adds its own); only what we read is required.
    model_config = ConfigDict(extra="ignore", populate_by_name=True)


class S3Bucket(_Lenient):
    name: str


class S3Object(_Lenient):
    key: str  # URL-encoded, '+' for spaces
    size: int | None = None
    etag: str | None = Field(default=None, alias="eTag")
    sequencer: str | None = None


class S3Entity(_Lenient):
    bucket: S3Bucket
    object: S3Object


class S3EventRecord(_Lenient):
    event_name: str = Field(alias="eventName")
    s3: S3Entity


class S3Event(_Lenient):
    records: list[S3EventRecord] = Field(default_factory=list, alias="Records")
    event: str | None = Field(default=None, alias="Event")  # "s3:TestEvent" when a notification is set up


class SnsEnvelope(_Lenient):
    type: str = Field(alias="Type")
    message: str = Field(alias="Message")
    topic_arn: str = Field(alias="TopicArn")
