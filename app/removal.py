"""Deleting media: the objects go first, then the record, so a half-done delete can simply be repeated."""

from __future__ import annotations

import logging
from enum import StrEnum

from app.domain.states import UploadStatus, can_move
from app.repository import advance, get_owned_upload
from app.services import Services

log = logging.getLogger(__name__)


class Removal(StrEnum):
    DELETED = "deleted"
    NOT_FOUND = "not_found"
    IN_PROGRESS = "in_progress"  # a worker holds it; deleting now would race the promotion


def remove_upload(services: Services, upload_id: str, owner_id: str) -> Removal:
    with services.db.session() as session:
        upload = get_owned_upload(session, upload_id, owner_id)
    if upload is None:
        return Removal.NOT_FOUND
    status = UploadStatus(upload.status)
    if status == UploadStatus.DELETED:
        return Removal.DELETED  # idempotent
    if not can_move(status, UploadStatus.DELETED):
        return Removal.IN_PROGRESS
    # Objects first: if the record were marked first and the delete failed, a public object would stay
    # reachable with nothing pointing at it. (CDN copies expire with their Cache-Control max-age.)
    if upload.multipart_upload_id and status in (UploadStatus.PENDING, UploadStatus.EXPIRED):
        # A cancelled resumable upload: its parts go too, and any part still being sent is refused.
        services.storage.abort_multipart(upload.temp_key, upload.multipart_upload_id)
    for key in upload.object_keys:
        services.storage.delete(key)
    with services.db.session() as session:
        moved = advance(session, upload_id, UploadStatus.DELETED)
    log.info(
        "media deleted",
        extra={
            "upload_id": upload_id,
            "key": upload.final_key,
            "stage": "delete",
            "outcome": "deleted" if moved else "raced",
        },
    )
    return Removal.DELETED if moved else Removal.IN_PROGRESS
