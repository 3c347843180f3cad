"""Resumable uploads after the ticket: part URLs, the parts stored so far, completion and cancellation.

The ticket (`app.tickets`) created the store's multipart upload at `temp/<id>` and fixed the part size; here
every part URL signs its part's exact length, and completion is refused unless the stored parts add up to the
declared size, so nothing beyond the ticket can be stored. Completion takes `pending` → `uploaded` in the
database before it asks the store, so a cancel racing it cannot abort the parts under it; once the store has
the whole object the upload is queued at once, as its `ObjectCreated:CompleteMultipartUpload` event would
(which then finds it queued).
"""

from __future__ import annotations

import logging
from contextlib import suppress
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from botocore.exceptions import ClientError
from sqlalchemy import select

from app.domain.multipart import (
    MultipartRefusal,
    MultipartRefused,
    PartPlan,
    StoredPart,
    check_completion,
    check_part_numbers,
)
from app.domain.states import UploadStatus
from app.intake import QueueUnavailable, queue_upload
from app.models import Upload
from app.repository import advance, get_owned_upload
from app.services import Services

log = logging.getLogger(__name__)


class MultipartState(StrEnum):
    NOT_FOUND = "not_found"
    NOT_MULTIPART = "not_multipart"  # a POST ticket: nothing to resume
    CLOSED = "closed"  # completed, cancelled or expired: it takes no more parts


class MultipartUnavailable(Exception):
    def __init__(self, state: MultipartState, message: str) -> None:
        super().__init__(message)
        self.state = state
        self.message = message


@dataclass(frozen=True)
class PartUrl:
    number: int
    url: str
    length: int
    expires_at: datetime


def open_upload(services: Services, upload_id: str, owner_id: str) -> tuple[Upload, PartPlan]:
    """The owner's multipart upload that still takes parts, with its part plan."""
    with services.db.session() as session:
        upload = get_owned_upload(session, upload_id, owner_id)
    if upload is None:
        raise MultipartUnavailable(MultipartState.NOT_FOUND, "no such upload")
    if not upload.multipart_upload_id or not upload.part_size:
        raise MultipartUnavailable(MultipartState.NOT_MULTIPART, "this upload has a POST ticket, not parts")
    if upload.status != UploadStatus.PENDING or upload.ticket_expires_at <= datetime.now(UTC):
        raise MultipartUnavailable(MultipartState.CLOSED, f"the upload is {upload.status}; it takes no parts")
    return upload, PartPlan(upload.declared_size, upload.part_size)


def part_urls(services: Services, upload: Upload, plan: PartPlan, numbers: list[int]) -> list[PartUrl]:
    assert upload.multipart_upload_id
    ttl = services.settings.ticket_ttl_seconds
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
    return [
        PartUrl(
            number,
            services.storage.presign_upload_part(
                upload.temp_key, upload.multipart_upload_id, number, plan.part_length(number), ttl
            ),
            plan.part_length(number),
            expires_at,
        )
        for number in check_part_numbers(plan, numbers)
    ]


def stored_parts(services: Services, upload: Upload) -> list[StoredPart]:
    assert upload.multipart_upload_id
    parts = services.storage.list_parts(upload.temp_key, upload.multipart_upload_id)
    if parts is None:
        raise MultipartUnavailable(MultipartState.CLOSED, "the store no longer holds this upload's parts")
    return parts


# The store's answers to CompleteMultipartUpload that say it completed nothing.
_REFUSED_COMPLETIONS = frozenset({"InvalidPart", "InvalidPartOrder", "EntityTooSmall", "NoSuchUpload"})


def complete(services: Services, upload: Upload, plan: PartPlan, claimed: dict[int, str]) -> str:
    """Join the parts if they make up exactly the declared size, then queue the upload; returns its status.

    The transition is decided first: `pending` → `uploaded` as a conditional UPDATE, committed before the
    store is asked to complete. A cancel (DELETE) racing it either took `deleted` first — then this request
    answers 409 `upload_closed` and touches nothing — or finds the upload `uploaded` and answers 409 without
    aborting anything. Only the winner touches the store, so completing never meets an aborted upload. (No
    lock is held across the store call: the local SNS posts the completion's event synchronously, and that
    event's request must not wait for this one.) If the store then refuses to complete, the move is undone.
    """
    assert upload.multipart_upload_id
    context = {"upload_id": upload.id, "key": upload.temp_key, "stage": "complete"}
    stored = {part.number: part for part in stored_parts(services, upload)}
    try:
        parts = check_completion(plan, claimed, stored)
    except MultipartRefused as refused:
        log.warning("completion refused", extra={**context, "outcome": refused.code.value})
        raise
    with services.db.session() as session:
        won = advance(session, upload.id, UploadStatus.UPLOADED)
        status = None if won else session.scalar(select(Upload.status).where(Upload.id == upload.id))
    if not won:
        log.info("completion lost the race", extra={**context, "outcome": "closed", "status": status})
        raise MultipartUnavailable(MultipartState.CLOSED, f"the upload is {status}; it takes no parts")
    try:
        etag = services.storage.complete_multipart(upload.temp_key, upload.multipart_upload_id, parts)
    except ClientError as error:
        code = str(error.response.get("Error", {}).get("Code", ""))
        if code not in _REFUSED_COMPLETIONS:
            raise  # the store may have completed: `uploaded` stands, its event or reconcile queues it
        with services.db.session() as session:
            advance(session, upload.id, UploadStatus.PENDING)  # nothing was stored: the ticket is open again
        log.warning("completion refused by the store", extra={**context, "outcome": code})
        if code == "NoSuchUpload":
            message = "the store no longer holds this upload's parts"
            raise MultipartUnavailable(MultipartState.CLOSED, message) from None
        raise MultipartRefused(
            MultipartRefusal.SIZE_MISMATCH, f"the store refused the parts: {code}"
        ) from None
    log.info(
        "multipart completed", extra={**context, "outcome": "completed", "parts": len(parts), "etag": etag}
    )
    # If the queue is down, the upload stays `uploaded`: its S3 event, or else the reconcile sweep, queues it.
    with suppress(QueueUnavailable):
        queue_upload(services, upload.id, etag, {**context, "source": "complete"})
    return UploadStatus.UPLOADED.value
