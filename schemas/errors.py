"""The one error shape every endpoint returns."""

from __future__ import annotations

from pydantic import BaseModel, Field

from app.domain.errors import ErrorCode
from app.domain.rejections import RejectionCode

# Every code a client can meet: API errors, rejection reasons of uploads, and `processing_failed` (an upload
# whose transient errors outlasted the retries). Documented as an enum; clients should still expect new ones.
ERROR_CODES = sorted({*ErrorCode, *RejectionCode, "processing_failed"})


class ErrorDetail(BaseModel):
    code: str = Field(json_schema_extra={"enum": ERROR_CODES})
    message: str


class ErrorResponse(BaseModel):
    error: ErrorDetail
