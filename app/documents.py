"""Document versions: allocated at promotion, listed newest first for those who may see them.

A version number is allocated by one upsert on `document_versions` (`INSERT … ON CONFLICT DO UPDATE SET
last_version = last_version + 1 RETURNING last_version`): PostgreSQL locks the counter's row and SQLite
serialises writers, so two uploads of one document promoted at the same moment get 1 and 2, never 1 and 1.
The number is stored on the upload in the same transaction, so a retried job reuses it instead of taking
another.
"""

from __future__ import annotations

from sqlalchemy import select, update
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import Session

from app.domain.documents import DOCUMENT_KIND
from app.domain.states import UploadStatus
from app.models import DocumentCounter, Upload


def allocate_version(session: Session, upload: Upload) -> int:
    """The upload's version of its document, allocated on first call (the upsert is the transaction's
    first statement, so SQLite takes its write lock before reading anything)."""
    if upload.version is not None:
        return upload.version
    assert upload.document_id is not None
    dialect = session.get_bind().dialect.name
    insert = postgresql.insert if dialect == "postgresql" else sqlite.insert
    statement = (
        insert(DocumentCounter)
        .values(owner_id=upload.owner_id, document_id=upload.document_id, last_version=1)
        .on_conflict_do_update(
            index_elements=[DocumentCounter.owner_id, DocumentCounter.document_id],
            set_={"last_version": DocumentCounter.last_version + 1},
        )
        .returning(DocumentCounter.last_version)
    )
    version = int(session.scalar(statement) or 0)
    session.execute(update(Upload).where(Upload.id == upload.id).values(version=version))
    return version


def ready_versions(session: Session, owner_id: str, document_id: str) -> list[Upload]:
    """Every readable version of the owner's document, newest first."""
    query = select(Upload).where(
        Upload.owner_id == owner_id,
        Upload.kind == DOCUMENT_KIND,
        Upload.document_id == document_id,
        Upload.status == UploadStatus.READY.value,
    )
    return list(session.scalars(query.order_by(Upload.version.desc(), Upload.created_at.desc())))
