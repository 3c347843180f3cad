"""Wire types of `/v1/grants`."""

from __future__ import annotations

from datetime import datetime
from typing import Literal
from uuid import UUID

from pydantic import BaseModel, ConfigDict


class CreateGrantRequest(BaseModel):
    model_config = ConfigDict(extra="forbid")

    viewer_id: UUID
    relation: Literal["friend", "trainer"]


class GrantResponse(BaseModel):
    owner_id: str
    viewer_id: str
    relation: str
    created_at: datetime


class GrantList(BaseModel):
    grants: list[GrantResponse]
