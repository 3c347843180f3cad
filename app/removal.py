"""Deleting media and cancelling uploads: the database decides first, then the store follows.

The move to `deleted` is taken under the upload's row lock (and as a conditional UPDATE), and only the request
that took it touches the store. A DELETE racing the upload's S3 event, a multipart `complete` or a worker's
claim either wins — the other side then finds the upload `deleted` and does nothing — or loses and changes
nothing at all: no part aborted, no object deleted, 409. (Deleting first and deciding second was the old
order: a DELETE that lost to the event had already deleted the temp object, and the upload ended
`missing_object`.)

If the store fails after the commit, the record says `deleted` while objects remain: a repeated DELETE of a
deleted upload deletes them again (every store call here is idempotent), and the temp clean-up frees what is
left under `temp/`. Private objects are unreachable meanwhile (links are presigned from live records only);
CDN copies of public ones expire with their Cache-Control max-age.
"""

from __future__ import annotations

import logging
from enum import StrEnum

from app.domain.states import UploadStatus, can_move
from app.models import Upload
from app.repository import advance, lock_upload
from app.services import Services

log = logging.getLogger(__name__)


class Removal(StrEnum):
    DELETED = "deleted"
    NOT_FOUND = "not_found"
    IN_PROGRESS = "in_progress"  # queued or being processed: deleting now would race the promotion


def remove_upload(services: Services, upload_id: str, owner_id: str) -> Removal:
    context = {"upload_id": upload_id, "stage": "delete"}
    with services.db.session() as session:
        upload = lock_upload(session, upload_id, owner_id)
        if upload is None:
            return Removal.NOT_FOUND
        previous = UploadStatus(upload.status)
        # `advance` re-checks the state in its UPDATE: on SQLite, which has no row lock, it is the arbiter.
        if previous != UploadStatus.DELETED and (
            not can_move(previous, UploadStatus.DELETED)
            or not advance(session, upload_id, UploadStatus.DELETED)
        ):
            log.info("delete refused", extra={**context, "outcome": "in_progress", "status": previous.value})
            return Removal.IN_PROGRESS
    _remove_objects(services, upload)
    log.info(
        "media deleted",
        extra={
            **context,
            "key": upload.final_key,
            "outcome": "repeated" if previous == UploadStatus.DELETED else "deleted",
            "from": previous.value,
        },
    )
    return Removal.DELETED


def _remove_objects(services: Services, upload: Upload) -> None:
    """Everything the upload may have in the store; each call is a no-op for what is already gone."""
    if upload.multipart_upload_id and not upload.final_key:
        # A cancelled resumable upload: its parts go too, and any part still being sent is refused.
        services.storage.abort_multipart(upload.temp_key, upload.multipart_upload_id)
    for key in upload.object_keys:
        services.storage.delete(key)
