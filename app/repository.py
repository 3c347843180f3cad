"""Reading and moving upload records. All state changes go through `advance`."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from sqlalchemy import CursorResult, and_, func, or_, select, update
from sqlalchemy.orm import Session, lazyload

from app.domain.states import UploadStatus, sources_of
from app.models import Upload, utcnow


def get_upload(session: Session, upload_id: str) -> Upload | None:
    return session.get(Upload, upload_id)


def get_owned_upload(session: Session, upload_id: str, owner_id: str) -> Upload | None:
    return session.scalar(select(Upload).where(Upload.id == upload_id, Upload.owner_id == owner_id))


def lock_upload(session: Session, upload_id: str, owner_id: str | None = None) -> Upload | None:
    """The upload, its row locked until the transaction ends (`SELECT … FOR UPDATE` on PostgreSQL; SQLite has
    no row locks and serializes writers instead, and every move is still a conditional UPDATE).

    For a decision that must be taken once: whoever holds the lock sees the state no other transaction can
    change before it commits; `advance` from another transaction waits for it, then re-checks its condition.
    """
    query = select(Upload).where(Upload.id == upload_id).with_for_update()
    if owner_id is not None:
        query = query.where(Upload.owner_id == owner_id)
    return session.scalar(query)


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


def claim(session: Session, upload_id: str, to: UploadStatus, **fields: Any) -> Upload | None:
    """`advance`, answering with the upload as it is after the move (None if the move was not allowed): one
    `UPDATE … RETURNING` instead of an UPDATE and then a SELECT (variants load only if asked for)."""
    statement = (
        update(Upload)
        .where(Upload.id == upload_id, Upload.status.in_([s.value for s in sources_of(to)]))
        .values(status=to.value, updated_at=utcnow(), **fields)
        .returning(Upload)
        .options(lazyload(Upload.variants))
        .execution_options(synchronize_session=False)
    )
    return session.scalars(statement).one_or_none()


def list_ready_media(
    session: Session,
    owner_id: str,
    visibilities: frozenset[str],
    kind: str | None,
    before: tuple[datetime, str] | None,
    limit: int,
) -> list[Upload]:
    """An owner's ready media, newest first, keyset-paginated on (created_at, id) so pages never shift."""
    query = select(Upload).where(
        Upload.owner_id == owner_id,
        Upload.status == UploadStatus.READY.value,
        Upload.visibility.in_(sorted(visibilities)),
    )
    if kind:
        query = query.where(Upload.kind == kind)
    if before:
        created_at, upload_id = before
        query = query.where(
            or_(Upload.created_at < created_at, and_(Upload.created_at == created_at, Upload.id < upload_id))
        )
    return list(session.scalars(query.order_by(Upload.created_at.desc(), Upload.id.desc()).limit(limit)))


# Statuses whose bytes count against a quota: stored media, and tickets that may still be used.
_QUOTA_STATUSES = [s.value for s in (UploadStatus.PENDING, UploadStatus.UPLOADED, UploadStatus.PROCESSING)]


def bytes_in_use(session: Session, owner_id: str) -> int:
    """Stored bytes of ready media plus the declared size of uploads still in flight."""
    stored = session.scalar(
        select(func.coalesce(func.sum(Upload.bytes), 0)).where(
            Upload.owner_id == owner_id, Upload.status == UploadStatus.READY.value
        )
    )
    in_flight = session.scalar(
        select(func.coalesce(func.sum(Upload.declared_size), 0)).where(
            Upload.owner_id == owner_id, Upload.status.in_(_QUOTA_STATUSES)
        )
    )
    return int(stored or 0) + int(in_flight or 0)
