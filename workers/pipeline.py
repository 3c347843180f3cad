"""The life of one upload inside a worker: claim → fetch → sniff → process → promote → ready → follow-ups.

The processor is chosen by what the bytes are (`app.domain.kinds.processing_for`): image, video, PDF. It
works on a local file and returns the files to store (main + named variants), which are streamed to the
store from disk.

Refused content ends `rejected` (temp object deleted, nothing promoted). Transient errors propagate so RQ
retries the job; on the last attempt the upload is marked `failed` for ops. Every state change is a
conditional transition, so a replayed or duplicated job for a finished upload changes nothing.
"""

from __future__ import annotations

import errno
import hashlib
import logging
import shutil
import tempfile
import time
from pathlib import Path

from app import metrics
from app.documents import allocate_version
from app.domain.documents import DOCUMENT_KIND
from app.domain.keys import final_key
from app.domain.kinds import KINDS, Visibility, processing_for
from app.domain.rejections import Rejected
from app.domain.states import UploadStatus
from app.models import Upload, Variant
from app.repository import advance, claim, get_upload
from app.services import Services
from workers.followups import run_follow_ups
from workers.processing import processor_for
from workers.processing.outputs import Processed
from workers.sandbox import ProcessingCrashed, cpu_spent
from workers.stages import kept
from workers.stages.fetch import fetch
from workers.stages.promote import MAIN, StoredFile, promote
from workers.stages.sniff import sniff

log = logging.getLogger(__name__)


class GaveUp(Exception):
    """The upload is `failed` for good before its retries ran out: the job must not be retried by RQ (it goes to
    RQ's failed registry, where ops see it and can retry it)."""


class Laps:
    """Wall time of each step of one attempt, logged with `upload ready` (`timings`, seconds): where a job's
    time goes, per upload, without a profiler (`bench.pipeline` reads them)."""

    def __init__(self) -> None:
        self._last = time.perf_counter()
        self.seconds: dict[str, float] = {}

    def lap(self, step: str) -> None:
        now = time.perf_counter()
        self.seconds[step] = round(now - self._last, 5)
        self._last = now


def run(services: Services, upload_id: str, last_attempt: bool, first_attempt: bool = True) -> str:
    """Process one upload; returns the state it ended in (or was already in)."""
    laps = Laps()
    with services.db.session() as session:
        upload = claim(session, upload_id, UploadStatus.PROCESSING)
        if upload is None:  # finished, deleted or unknown: a replayed or duplicated job
            current = get_upload(session, upload_id)
            status = current.status if current else "unknown"
    if upload is None:
        log.info("nothing to do", extra={"upload_id": upload_id, "stage": "claim", "outcome": status})
        return status
    context = {"upload_id": upload_id, "key": upload.temp_key, "kind": upload.kind}
    laps.lap("claim")
    started = time.monotonic()
    metrics.job_started(services)
    cpu_spent(reset=True)
    try:
        _process(services, upload, context, laps)
    except Rejected as rejected:
        kept.forget(upload_id)
        _reject(services, upload, rejected, context)
        metrics.job_finished("rejected", rejected.code.value, cpu_spent())
        return UploadStatus.REJECTED.value
    except Exception as error:
        _attempt_failed(services, upload, error, context, last_attempt, first_attempt)
        raise
    kept.forget(upload_id)
    metrics.job_finished("ready", cpu_seconds=cpu_spent())
    laps.lap("metrics")
    log.info(
        "upload ready",
        extra={
            **context,
            "stage": "done",
            "outcome": "ready",
            "seconds": round(time.monotonic() - started, 3),
            "cpu_seconds": round(cpu_spent(), 3),
            "timings": laps.seconds,
        },
    )
    return UploadStatus.READY.value


def _attempt_failed(
    services: Services,
    upload: Upload,
    error: Exception,
    context: dict[str, str],
    last_attempt: bool,
    first_attempt: bool,
) -> None:
    """Count and log a failed attempt; on the last one (or a repeated crash) the upload is `failed`. Raises
    `GaveUp` when RQ must not retry; otherwise the caller re-raises `error` for RQ to retry."""
    # A parser exception no table judges is the same on every try: retried once (the machine may have
    # been at fault), then final, instead of using up every retry on the same file.
    repeated_crash = isinstance(error, ProcessingCrashed) and error.raised and not first_attempt
    final = last_attempt or repeated_crash
    code = _error_code(error)
    metrics.job_finished("failed" if final else "retry", code, cpu_spent())
    if code == "DiskFull":
        temp = tempfile.gettempdir()
        log.error(
            "disk full: the attempt could not write its files",
            extra={
                **context,
                "stage": "process",
                "directory": temp,
                "free_bytes": shutil.disk_usage(temp).free,
            },
        )
    if final:
        kept.forget(upload.id)
        with services.db.session() as session:
            advance(
                session,
                upload.id,
                UploadStatus.FAILED,
                error_code="processing_failed",
                error_message=f"{type(error).__name__}: {error}"[:500],
            )
    log.exception(
        "processing error",
        extra={**context, "stage": "process", "outcome": "failed" if final else "will_retry"},
    )
    if repeated_crash:
        raise GaveUp(str(error)) from error


def _process(services: Services, upload: Upload, context: dict[str, str], laps: Laps) -> None:
    kind = KINDS[upload.kind]
    with tempfile.TemporaryDirectory(prefix="broker-") as workdir_name:
        workdir = Path(workdir_name)
        metrics.job_stage("fetch")
        source = kept.take(upload.id, workdir)
        reused = source is not None
        if source is None:
            source = fetch(services.storage, upload.temp_key, kind, upload.declared_size, workdir)
        log.info("fetched", extra={**context, "stage": "fetch", "outcome": "kept" if reused else "ok"})
        laps.lap("fetch")
        try:
            _process_fetched(services, upload, context, laps, source, workdir)
        except Rejected:
            raise
        except Exception:
            if kept.keep(upload.id, source):
                log.info("fetched file kept for the retry", extra={**context, "stage": "fetch"})
            raise


def _process_fetched(
    services: Services, upload: Upload, context: dict[str, str], laps: Laps, source: Path, workdir: Path
) -> None:
    kind = KINDS[upload.kind]
    metrics.job_stage("sniff")
    mime = sniff(source, upload.declared_type)
    processing = processing_for(mime)
    laps.lap("sniff")
    metrics.job_stage(processing.value)
    try:
        processed = processor_for(processing)(source, mime, kind, services.settings, workdir)
    except ProcessingCrashed as crash:
        # Not a verdict: the job retries. The file's digest lets ops find it, and a crash that is the
        # file's fault becomes the next entry of `workers.processing.failures`.
        log.error(
            "processing crashed",
            extra={**context, "stage": processing.value, "sha256": _sha256(source), "error": str(crash)},
        )
        raise
    laps.lap(processing.value)
    log.info(
        "processed",
        extra={
            **context,
            "stage": processing.value,
            "outcome": "ok",
            "variants": sorted(processed.variants),
        },
    )
    metrics.job_stage("promote")
    key = _final_key(services, upload, processed.main.extension)
    stored = promote(services.storage, services.settings, upload, key, processed)
    laps.lap("store")
    _record_ready(services, upload, stored, processed)
    laps.lap("ready")
    # After `ready`: a failed delete only leaves garbage for the temp clean-up, never a lost upload.
    _delete_temp(services, upload, context)
    laps.lap("cleanup")
    run_follow_ups(services, upload)
    laps.lap("follow_ups")
    log.info("promoted", extra={**context, "stage": "promote", "outcome": "ok", "final_key": key})


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as file:
        for block in iter(lambda: file.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _error_code(error: Exception) -> str:
    """The metric's code of a retry or failure: the exception type, and a full disk named as such (it shows
    up as a crashed sandbox or an OSError, and is the host's problem, not the file's)."""
    if (isinstance(error, OSError) and error.errno == errno.ENOSPC) or "No space left on device" in str(
        error
    ):
        return "DiskFull"
    return type(error).__name__


def _final_key(services: Services, upload: Upload, extension: str) -> str:
    """The kind's key; a document's carries its version, allocated here, as late as possible, so only
    uploads that passed every check take a number."""
    context = dict(upload.context)
    if upload.kind == DOCUMENT_KIND:
        with services.db.session() as session:
            context["version"] = str(allocate_version(session, upload))
    visibility = Visibility(upload.visibility)
    return final_key(upload.kind, visibility, upload.owner_id, upload.id, extension, context)


def _record_ready(
    services: Services, upload: Upload, stored: dict[str, StoredFile], processed: Processed
) -> None:
    """`processing` → `ready` with the main file's facts, and the variants' rows in the same transaction."""
    main = stored[MAIN]
    with services.db.session() as session:
        moved = advance(
            session,
            upload.id,
            UploadStatus.READY,
            final_key=main.key,
            content_type=main.content_type,
            bytes=main.bytes,
            width=main.width,
            height=main.height,
            sha256=main.sha256,
            duration_seconds=processed.duration_seconds,
            codecs=processed.codecs,
            pages=processed.pages,
            error_code=None,
            error_message=None,
        )
        if moved:
            session.add_all(
                Variant(
                    upload_id=upload.id,
                    name=name,
                    key=file.key,
                    content_type=file.content_type,
                    bytes=file.bytes,
                    width=file.width,
                    height=file.height,
                    sha256=file.sha256,
                )
                for name, file in stored.items()
                if name != MAIN
            )


def _reject(services: Services, upload: Upload, rejected: Rejected, context: dict[str, str]) -> None:
    with services.db.session() as session:
        advance(
            session,
            upload.id,
            UploadStatus.REJECTED,
            error_code=rejected.code.value,
            error_message=rejected.message[:500],
        )
    _delete_temp(services, upload, context)
    log.warning(
        "upload rejected",
        extra={**context, "stage": "validate", "outcome": "rejected", "code": rejected.code.value},
    )


def _delete_temp(services: Services, upload: Upload, context: dict[str, str]) -> None:
    try:
        services.storage.delete(upload.temp_key)
    except Exception:
        log.warning("temp object not deleted", extra={**context, "stage": "cleanup"}, exc_info=True)
