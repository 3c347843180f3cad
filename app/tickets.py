"""Issuing upload tickets: record the pending upload, then presign the POST that pins it."""

from __future__ import annotations

import logging
import unicodedata
import uuid
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from app import metrics
from app.auth import Principal
from app.domain.keys import temp_key
from app.domain.multipart import PartPlan, plan_parts, wants_multipart
from app.domain.states import UploadStatus
from app.domain.tickets import (
    TicketRefusal,
    TicketRefused,
    TicketRequest,
    check_quota,
    plan_ticket,
    post_policy_conditions,
)
from app.repository import bytes_in_use
from app.services import Services

log = logging.getLogger(__name__)


@dataclass(frozen=True)
class IssuedUpload:
    """What a ticket's answer tells of the upload it created (an ORM object would cost a ticket ~40 µs)."""

    id: str
    status: str
    temp_key: str
    declared_size: int
    ticket_expires_at: datetime


@dataclass(frozen=True)
class Ticket:
    upload: IssuedUpload
    post: dict[str, Any] | None  # a presigned POST, or None for a resumable (multipart) upload
    parts: PartPlan | None = None


def clean_filename(filename: str | None) -> str | None:
    """Keep only the base name, printable, for metadata; it never becomes part of a key."""
    if not filename:
        return None
    base = filename.replace("\\", "/").rsplit("/", 1)[-1]
    printable = "".join(ch for ch in unicodedata.normalize("NFC", base) if ch.isprintable())
    return printable.strip()[:255] or None


def issue_ticket(
    services: Services, principal: Principal, request: TicketRequest, filename: str | None
) -> Ticket:
    now = datetime.now(UTC)
    plan = plan_ticket(request, principal.roles, now.date())
    settings = services.settings
    quota = settings.storage_quota_bytes
    upload_id = str(uuid.uuid4())
    key = temp_key(upload_id)
    resumable = wants_multipart(request.size, request.resumable, settings.multipart_threshold_bytes)
    ttl = settings.multipart_ttl_seconds if resumable else settings.ticket_ttl_seconds
    row: dict[str, Any] = {
        "id": upload_id,
        "owner_id": principal.user_id,
        "kind": plan.kind.name,
        "status": UploadStatus.PENDING.value,
        "visibility": plan.kind.visibility.value,
        "declared_type": plan.content_type,
        "declared_size": request.size,
        "filename": clean_filename(filename),
        "context": plan.context,
        "document_id": plan.context.get("document_id"),
        "temp_key": key,
        "ticket_expires_at": now + timedelta(seconds=ttl),
        "multipart_upload_id": None,
        "part_size": None,
        "ai_processed": False,
        "created_at": now,
        "updated_at": now,
    }
    post, parts = None, None
    if resumable:
        # Creating the multipart upload is a call to the store: refuse what is already over quota before it.
        if quota is not None:
            with services.db.session() as session:
                check_quota(bytes_in_use(session, principal.user_id), plan.max_bytes, quota)
        parts = plan_parts(request.size, settings.multipart_part_size_bytes)
        metadata = {"upload-id": upload_id, "owner-id": principal.user_id}
        row["multipart_upload_id"] = services.storage.create_multipart(key, plan.content_type, metadata)
        row["part_size"] = parts.part_size
    else:
        conditions = post_policy_conditions(services.storage.bucket, key, plan.content_type, plan.max_bytes)
        post = services.storage.presign_post(key, plan.content_type, conditions, ttl)
    # Recorded only once the store answered, so a store outage leaves no orphan `pending` rows. The INSERT's
    # own quota check is the one that counts: another ticket of the same user may have taken the room since.
    try:
        record_upload(services, row, plan.max_bytes, quota)
    except TicketRefused:
        if row["multipart_upload_id"]:
            _abandon_multipart(services, key, row["multipart_upload_id"])
        raise
    log.info(
        "ticket issued",
        extra={
            "upload_id": upload_id,
            "key": key,
            "kind": plan.kind.name,
            "stage": "ticket",
            "outcome": "issued",
            "method": "MULTIPART" if resumable else "POST",
        },
    )
    metrics.ticket_issued(services, plan.kind.name)
    issued = IssuedUpload(upload_id, row["status"], key, request.size, row["ticket_expires_at"])
    return Ticket(issued, post, parts)


def _abandon_multipart(services: Services, key: str, multipart_id: str) -> None:
    """Abort the multipart upload of a ticket refused after it was opened; the refusal stands either way."""
    try:
        services.storage.abort_multipart(key, multipart_id)
    except Exception as error:  # no record points at it: the temp clean-up aborts it once it is stale
        log.warning(
            "refused ticket's multipart upload not aborted",
            extra={"key": key, "stage": "ticket", "outcome": "left_to_cleanup", "error": str(error)},
        )


# --- the row ------------------------------------------------------------------------------------------------
def record_upload(services: Services, row: dict[str, Any], requested: int, quota: int | None) -> None:
    """Insert the `pending` row; with a quota, only if the owner's bytes in use leave room for `requested`
    (else `TicketRefused(QUOTA_EXCEEDED)`, nothing inserted)."""
    if not services.ticket_rows.insert(row, requested, quota):
        with services.db.session() as session:
            in_use = bytes_in_use(session, row["owner_id"])
        check_quota(in_use, requested, quota)
        # Room was made between the two statements (an upload deleted or expired): refuse all the same;
        # the client retries.
        raise TicketRefused(
            TicketRefusal.QUOTA_EXCEEDED,
            f"storage quota is {quota} bytes; {in_use} in use, this upload needs {requested}",
        )
