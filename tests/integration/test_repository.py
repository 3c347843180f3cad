"""State transitions against the real databases (SQLite, and PostgreSQL when it answers)."""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta

from app.db import Database
from app.documents import allocate_version
from app.domain.states import UploadStatus as S
from app.models import Upload
from app.repository import advance, get_upload


def new_upload(db: Database) -> str:
    upload_id = str(uuid.uuid4())
    with db.session() as session:
        session.add(
            Upload(
                id=upload_id,
                owner_id=str(uuid.uuid4()),
                kind="avatar",
                status=S.PENDING.value,
                visibility="public",
                declared_type="image/jpeg",
                declared_size=10,
                context={},
                temp_key=f"temp/{upload_id}",
                ticket_expires_at=datetime.now(UTC) + timedelta(minutes=10),
            )
        )
    return upload_id


def test_transitions_are_conditional_and_timestamps_aware(database_url):
    db = Database(database_url)
    upload_id = new_upload(db)
    with db.session() as session:
        assert advance(session, upload_id, S.UPLOADED)
        assert not advance(session, upload_id, S.UPLOADED)  # the same event twice
        assert not advance(session, upload_id, S.READY)  # not processed yet
        upload = get_upload(session, upload_id)
        assert upload is not None and upload.status == "uploaded"
        assert upload.updated_at.tzinfo is not None
    db.dispose()


def test_only_one_of_many_concurrent_claims_wins(database_url):
    db = Database(database_url)
    upload_id = new_upload(db)

    def claim(_: int) -> bool:
        with db.session() as session:
            return advance(session, upload_id, S.UPLOADED)

    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(claim, range(16)))
    assert results.count(True) == 1
    db.dispose()


def test_concurrent_uploads_of_one_document_get_distinct_versions_and_a_retry_keeps_its_own(database_url):
    db = Database(database_url)
    owner = str(uuid.uuid4())
    ids = [new_upload(db) for _ in range(12)]
    with db.session() as session:
        for upload_id in ids:
            upload = get_upload(session, upload_id)
            assert upload is not None
            upload.kind, upload.owner_id, upload.document_id = "document", owner, "plan-1"

    def allocate(upload_id: str) -> int:
        with db.session() as session:
            upload = get_upload(session, upload_id)
            assert upload is not None
            return allocate_version(session, upload)

    with ThreadPoolExecutor(6) as pool:
        versions = list(pool.map(allocate, ids))

    assert sorted(versions) == list(range(1, 13))  # never the same number twice
    assert allocate(ids[0]) == versions[0]  # a retried job reuses its number
    db.dispose()
