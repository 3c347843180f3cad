"""The temp clean-up sweep: garbage `temp/` objects, stale resumable uploads, expired tickets.

Safe to run twice at once or to interrupt at any point (see `workers.lifecycle`): objects are deleted only when
no record could still need them, and every state change is a conditional transition.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from sqlalchemy import select

from app.domain.keys import upload_id_from_temp_key
from app.domain.states import UploadStatus
from app.models import Upload
from app.repository import advance
from app.services import Services
from app.storage import TempObject
from workers.lifecycle import SweepReport, as_utc, upload_states

S = UploadStatus


def temp_keep_reason(status: str | None, status_since: datetime | None, cutoff: datetime) -> str | None:
    """Why an old temp object must stay, or None when it is garbage. The rulebook of the clean-up:

    - no record: the broker writes the record before it hands out the ticket, so nobody can ever need it;
    - `ready`, `rejected`, `deleted`: the pipeline (or the owner's delete) meant to remove it and failed;
    - `uploaded`, `processing`: work in flight — a queued or running job (or the reconcile re-queue of a
      lost one) reads it; deleting it would turn a good upload into `missing_object`;
    - `pending`, `expired`: the object arrived but its event was lost — reconcile queues it; deleting it
      would lose the user's upload;
    - `failed`: ops may retry, and the retry reads it; freed once the failure is older than the max age.
    """
    if status is None:
        return None
    match UploadStatus(status):
        case S.UPLOADED | S.PROCESSING:
            return "in_flight"
        case S.PENDING | S.EXPIRED:
            return "awaiting_reconcile"
        case S.FAILED:
            return "failed_recently" if status_since is None or status_since > cutoff else None
        case _:
            return None


def cleanup(services: Services, older_than_seconds: int | None = None, dry_run: bool = False) -> SweepReport:
    """Delete garbage `temp/` objects older than the max age, then expire stale tickets.

    An object is judged by the record's state *now*, and the states that free an object (no record,
    ready, rejected, deleted) can never lead back to work that reads it — so a state change racing the
    sweep cannot make it delete something in use. `failed` can (an ops retry), hence its own grace period.
    """
    now = datetime.now(UTC)
    max_age = services.settings.temp_max_age_seconds if older_than_seconds is None else older_than_seconds
    cutoff = now - timedelta(seconds=max_age)
    report = SweepReport("cleanup", dry_run, {"older_than_seconds": max_age})
    stage = "cleanup_temp"
    for page in services.storage.list_temp_pages():
        old = [obj for obj in page if obj.last_modified <= cutoff]
        report.count(stage, "kept_young", len(page) - len(old))
        states = upload_states(services, (obj.upload_id for obj in old))
        garbage: dict[str, TempObject] = {}
        for obj in old:
            status, since = states.get(obj.upload_id or "", (None, None))
            reason = temp_keep_reason(status, since, cutoff)
            if reason:
                report.count(stage, f"kept_{reason}")
            else:
                garbage[obj.key] = obj
        refused = {} if dry_run else services.storage.delete_many(list(garbage))
        for key, obj in garbage.items():
            if key in refused:
                report.act(stage, "delete_failed", obj.upload_id, key, error=refused[key])
            else:
                report.act(stage, "would_delete" if dry_run else "deleted", obj.upload_id, key)
    _abort_stale_multipart(services, report, now, cutoff)
    _expire_tickets(services, report, now)
    return report


def _abort_stale_multipart(services: Services, report: SweepReport, now: datetime, cutoff: datetime) -> None:
    """Abort resumable uploads nobody can finish: ticketed longer ago than the multipart TTL, cancelled,
    expired or finished, or with no record at all (older than the max age: a ticket writes its record just
    after creating the multipart upload). Their parts are invisible in listings but billed, so they must
    not wait for the bucket's lifecycle rule.
    """
    stage = "abort_multipart"
    ttl_cutoff = now - timedelta(seconds=services.settings.multipart_ttl_seconds)
    uploads = list(services.storage.list_temp_multipart_uploads())
    ids = sorted({upload_id for item in uploads if (upload_id := upload_id_from_temp_key(item.key))})
    with services.db.session() as session:
        rows = session.execute(select(Upload.id, Upload.status, Upload.created_at).where(Upload.id.in_(ids)))
        records = {row.id: (row.status, as_utc(row.created_at)) for row in rows}
    for item in uploads:
        upload_id = upload_id_from_temp_key(item.key)
        status, ticketed = records.get(upload_id or "", (None, None))
        if ticketed is None:
            stale = item.initiated <= cutoff
        else:
            stale = ticketed <= ttl_cutoff or status != S.PENDING.value
        if not stale:
            report.count(stage, "kept_open")
            continue
        if not report.dry_run:
            services.storage.abort_multipart(item.key, item.upload_id)
        report.act(stage, "would_abort" if report.dry_run else "aborted", upload_id, item.key)


def _expire_tickets(services: Services, report: SweepReport, now: datetime) -> None:
    """`pending` past the ticket's expiry with no object → `expired` (frees the user's quota too).

    If the object lands between the HEAD and the transition, nothing is lost: `expired` → `uploaded` is
    allowed, for the late event and for reconcile alike.
    """
    stage = "expire_tickets"
    with services.db.session() as session:
        stale = session.execute(
            select(Upload.id, Upload.temp_key).where(
                Upload.status == S.PENDING.value, Upload.ticket_expires_at < now
            )
        ).all()
    for upload_id, key in stale:
        if services.storage.head(key) is not None:
            report.count(stage, "kept_object_present")  # uploaded, event lost: reconcile's case
            continue
        if report.dry_run:
            report.act(stage, "would_expire", upload_id, key)
            continue
        with services.db.session() as session:
            moved = advance(session, upload_id, S.EXPIRED)
        report.act(stage, "expired" if moved else "raced", upload_id, key)
