"""Wire types of `/v1/grants`."""

from __future__ import annotations

from datetime import datetime
from typing import Literal

from pydantic import BaseModel, Field

from schemas.uploads import STRICT_BODY, UUID_PATTERN


class CreateGrantRequest(BaseModel):
    model_config = STRICT_BODY

    viewer_id: str = Field(pattern=UUID_PATTERN, description="the user (a UUID) who may see your media")
    relation: Literal["friend", "trainer"]


class GrantResponse(BaseModel):
    owner_id: str
    viewer_id: str
    relation: str
    created_at: datetime


class GrantList(BaseModel):
    grants: list[GrantResponse]
