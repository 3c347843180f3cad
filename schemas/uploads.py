"""Wire types of the uploads and media endpoints."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from app.domain.kinds import KINDS
from app.domain.states import UploadStatus
from schemas.errors import ErrorDetail

KIND_SCHEMA = {"enum": sorted(KINDS)}
STATUS_SCHEMA = {"enum": [status.value for status in UploadStatus]}


class UploadContext(BaseModel):
    model_config = ConfigDict(extra="forbid")

    workout_id: str | None = None
    meal_date: str | None = Field(default=None, description="YYYY-MM-DD; food images default to today (UTC)")
    exercise_id: str | None = None
    document_id: str | None = None


class CreateUploadRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    kind: str = Field(description="the media kind", json_schema_extra=KIND_SCHEMA)
    content_type: str
    size: int = Field(gt=0, description="bytes the client will upload; the ticket allows at most this many")
    filename: str | None = Field(default=None, max_length=255)
    resumable: bool = Field(
        default=False, description="ask for a multipart (resumable) upload; files over 32 MiB always get one"
    )
    context: UploadContext = Field(default_factory=UploadContext)


# The server always sends `method` (the discriminator of a ticket's `upload`, and a part's HTTP method), so the
# document marks it required in answers; a typed client narrows on it without checking for its absence.
ALWAYS_SENT = ConfigDict(json_schema_serialization_defaults_required=True)


class PresignedPost(BaseModel):
    model_config = ALWAYS_SENT

    method: Literal["POST"] = "POST"
    url: str
    fields: dict[str, str]


class MultipartPlan(BaseModel):
    """A resumable upload: ask `parts_url` for presigned part PUTs, then POST the parts to `complete_url`."""

    model_config = ALWAYS_SENT

    method: Literal["MULTIPART"] = "MULTIPART"
    part_size: int = Field(description="every part is this long, the last one the remainder")
    part_count: int
    parts_url: str
    complete_url: str


class TicketResponse(BaseModel):
    upload_id: str
    status: str = Field(json_schema_extra=STATUS_SCHEMA)
    expires_at: datetime
    max_size: int
    upload: PresignedPost | MultipartPlan = Field(discriminator="method")


class PartUrlsRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    part_numbers: list[int] = Field(min_length=1, max_length=100)


class PartUrl(BaseModel):
    model_config = ALWAYS_SENT

    part_number: int
    url: str
    method: Literal["PUT"] = "PUT"
    headers: dict[str, str] = Field(description="send exactly these; Content-Length is signed")
    expires_at: datetime


class PartUrlsResponse(BaseModel):
    parts: list[PartUrl]


class StoredPartInfo(BaseModel):
    part_number: int
    etag: str
    size: int


class StoredPartsResponse(BaseModel):
    parts: list[StoredPartInfo]


class CompletedPart(BaseModel):
    model_config = ConfigDict(extra="forbid")

    part_number: int = Field(ge=1, le=10_000)
    etag: str = Field(min_length=1, max_length=128)


class CompleteRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    parts: list[CompletedPart] = Field(min_length=1, max_length=10_000)


class CompleteResponse(BaseModel):
    upload_id: str
    status: str = Field(json_schema_extra=STATUS_SCHEMA)


class MediaInfo(BaseModel):
    content_type: str
    bytes: int
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None
    codecs: str | None = Field(default=None, description='a video\'s codecs, e.g. "h264+aac"')
    pages: int | None = None
    sha256: str
    variants: list[str] | None = Field(default=None, description="names of the variants (GET /v1/media)")


class UploadStatusResponse(BaseModel):
    upload_id: str
    kind: str = Field(json_schema_extra=KIND_SCHEMA)
    status: str = Field(json_schema_extra=STATUS_SCHEMA)
    created_at: datetime
    updated_at: datetime
    media: MediaInfo | None = None
    error: ErrorDetail | None = None


class VariantLink(BaseModel):
    """A file made beside the main one (a video's `poster`, its `720p` rendition), with its own link."""

    content_type: str
    bytes: int
    width: int | None = None
    height: int | None = None
    url: str
    url_expires_at: datetime | None = None


class MediaResponse(BaseModel):
    upload_id: str
    kind: str = Field(json_schema_extra=KIND_SCHEMA)
    content_type: str
    bytes: int
    width: int | None = None
    height: int | None = None
    duration_seconds: float | None = None
    codecs: str | None = None
    pages: int | None = None
    document_id: str | None = None
    version: int | None = None
    url: str
    url_expires_at: datetime | None = None
    variants: dict[str, VariantLink] | None = None


class DocumentVersions(BaseModel):
    document_id: str
    versions: list[MediaResponse] = Field(description="ready versions, newest first")


class MediaPage(BaseModel):
    items: list[MediaResponse]
    next_cursor: str | None = None
