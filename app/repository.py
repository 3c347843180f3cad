"""Reading and moving upload records. All state changes go through `advance`."""

from __future__ import annotations

from typing import Any

from sqlalchemy import CursorResult, select, update
from sqlalchemy.orm import Session

from app.domain.states import UploadStatus, sources_of
from app.models import Upload, utcnow


def get_upload(session: Session, upload_id: str) -> Upload | None:
    return session.get(Upload, upload_id)


def get_owned_upload(session: Session, upload_id: str, owner_id: str) -> Upload | None:
    return session.scalar(select(Upload).where(Upload.id == upload_id, Upload.owner_id == owner_id))


def advance(session: Session, upload_id: str, to: UploadStatus, **fields: Any) -> bool:
    """Move an upload to `to` if, and only if, its current state allows it.

    A single conditional UPDATE, so concurrent or repeated callers cannot both win: exactly one gets True.
    """
    statement = (
        update(Upload)
        .where(Upload.id == upload_id, Upload.status.in_([s.value for s in sources_of(to)]))
        .values(status=to.value, updated_at=utcnow(), **fields)
    )
    result: CursorResult[Any] = session.execute(statement)  # type: ignore[assignment]
    return result.rowcount == 1
