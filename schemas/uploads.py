"""Wire types of the uploads and media endpoints."""

from __future__ import annotations

from datetime import date, datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field

from app.domain.kinds import KINDS
from app.domain.multipart import MAX_PART_URLS_PER_CALL, MAX_PARTS, MIN_PART_SIZE
from app.domain.states import UploadStatus
from schemas.errors import ErrorDetail

KIND_SCHEMA = {"enum": sorted(KINDS)}
STATUS_SCHEMA = {"enum": [status.value for status in UploadStatus]}

# Request bodies are read strictly, as their schema says: no `"size": true`, `"1000"` or `1.0` for an integer,
# no `"yes"` for a boolean (pydantic's strict mode, JSON input), no field the schema does not name.
STRICT_BODY = ConfigDict(extra="forbid", strict=True)
# Patterns say in the document what the server checks, so generated clients and fuzzers agree with it. Each is
# anchored with `$`, which in the server's (Rust) regex engine is the very end: no final "\n" slips through.
UUID_PATTERN = "^[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}$"
CONTEXT_ID_PATTERN = "^[A-Za-z0-9_-]{1,64}$"  # app.domain.tickets.CONTEXT_ID: context values become key parts
NO_CONTROL_PATTERN = "^[^\\x00-\\x1f\\x7f]*$"  # no NUL or other control character (PostgreSQL text)
# An S3 part ETag is 32 hex digits in quotes; stores differ a little, so any short run of safe characters.
ETAG_PATTERN = '^"?[0-9A-Za-z._~-]{1,64}"?$'
# The most parts an upload can have: the largest kind's largest file cut at S3's smallest part size (1 GiB:
# 205 parts; the broker plans 8 MiB parts, 128). `complete` takes no more, and its body cap fits that many of
# the longest entries the schema allows (`{"part_number": 10000, "etag": "\"<64 characters>\""}, ` is 104
# bytes; 160 leaves room for indentation). Was 10,000 parts against a 64 KiB cap.
MAX_UPLOAD_PARTS = min(MAX_PARTS, max(-(-kind.max_size // MIN_PART_SIZE) for kind in KINDS.values()))
COMPLETE_MAX_BYTES = MAX_UPLOAD_PARTS * 160


class UploadContext(BaseModel):
    model_config = STRICT_BODY

    workout_id: str | None = Field(default=None, pattern=CONTEXT_ID_PATTERN)
    meal_date: date | None = Field(default=None, description="YYYY-MM-DD; food images default to today (UTC)")
    exercise_id: str | None = Field(default=None, pattern=CONTEXT_ID_PATTERN)
    document_id: str | None = Field(default=None, pattern=CONTEXT_ID_PATTERN)


class CreateUploadRequest(BaseModel):
    model_config = STRICT_BODY

    kind: str = Field(description="the media kind", json_schema_extra=KIND_SCHEMA)
    content_type: str = Field(max_length=255, pattern=NO_CONTROL_PATTERN)
    size: int = Field(ge=1, description="bytes the client will upload; the ticket allows at most this many")
    filename: str | None = Field(default=None, max_length=255, pattern=NO_CONTROL_PATTERN)
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
    model_config = STRICT_BODY

    part_numbers: list[Annotated[int, Field(ge=1, le=MAX_PARTS)]] = Field(
        min_length=1, max_length=MAX_PART_URLS_PER_CALL
    )


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
    model_config = STRICT_BODY

    part_number: int = Field(ge=1, le=MAX_PARTS)
    etag: str = Field(pattern=ETAG_PATTERN, description="as the store reported it for the part")


class CompleteRequest(BaseModel):
    """At most the parts an upload can have (`MAX_UPLOAD_PARTS`); the route's body cap fits that many."""

    model_config = STRICT_BODY

    parts: list[CompletedPart] = Field(min_length=1, max_length=MAX_UPLOAD_PARTS)


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
