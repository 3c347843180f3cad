"""The life of one upload inside a worker: claim → fetch → sniff → process → promote → ready.

Refused content ends `rejected` (temp object deleted, nothing promoted). Transient errors propagate so RQ
retries the job; on the last attempt the upload is marked `failed` for ops. Every state change is a
conditional transition, so a replayed or duplicated job for a finished upload changes nothing.
"""

from __future__ import annotations

import logging
import tempfile
import time
from pathlib import Path

from app import metrics
from app.domain.keys import final_key
from app.domain.kinds import KINDS, Processing, Visibility, processing_for
from app.domain.rejections import Rejected
from app.domain.states import UploadStatus
from app.models import Upload
from app.repository import advance, get_upload
from app.services import Services
from workers.hooks import after_ready
from workers.sandbox import ProcessLimits, run_limited
from workers.stages.fetch import fetch
from workers.stages.image import ImageRules, ProcessedImage, write_image
from workers.stages.promote import promote
from workers.stages.sniff import sniff

log = logging.getLogger(__name__)


class ProcessingNotAvailable(Exception):
    """A kind whose processing is not built; tickets for it are refused, so this means a bad record."""


def run(services: Services, upload_id: str, last_attempt: bool) -> str:
    """Process one upload; returns the state it ended in (or was already in)."""
    with services.db.session() as session:
        claimed = advance(session, upload_id, UploadStatus.PROCESSING)
        upload = get_upload(session, upload_id)
    if upload is None or not claimed:
        status = upload.status if upload else "unknown"
        log.info("nothing to do", extra={"upload_id": upload_id, "stage": "claim", "outcome": status})
        return status
    context = {"upload_id": upload_id, "key": upload.temp_key, "kind": upload.kind}
    started = time.monotonic()
    metrics.job_started(services)
    try:
        _process(services, upload, context)
    except Rejected as rejected:
        _reject(services, upload, rejected, context)
        metrics.job_finished("rejected", rejected.code.value)
        return UploadStatus.REJECTED.value
    except Exception as error:
        metrics.job_finished("failed" if last_attempt else "retry", type(error).__name__)
        if last_attempt:
            with services.db.session() as session:
                advance(
                    session,
                    upload_id,
                    UploadStatus.FAILED,
                    error_code="processing_failed",
                    error_message=f"{type(error).__name__}: {error}"[:500],
                )
        log.exception(
            "processing error",
            extra={**context, "stage": "process", "outcome": "failed" if last_attempt else "will_retry"},
        )
        raise
    metrics.job_finished("ready")
    log.info(
        "upload ready",
        extra={
            **context,
            "stage": "done",
            "outcome": "ready",
            "seconds": round(time.monotonic() - started, 3),
        },
    )
    return UploadStatus.READY.value


def _process(services: Services, upload: Upload, context: dict[str, str]) -> None:
    kind = KINDS[upload.kind]
    with tempfile.TemporaryDirectory(prefix="broker-") as workdir:
        metrics.job_stage("fetch")
        source = fetch(services.storage, upload.temp_key, kind, upload.declared_size, Path(workdir))
        log.info("fetched", extra={**context, "stage": "fetch", "outcome": "ok"})
        metrics.job_stage("sniff")
        mime = sniff(source, upload.declared_type)
        if processing_for(mime) != Processing.IMAGE:
            raise ProcessingNotAvailable(f"no processing for {mime} yet")
        metrics.job_stage("image")
        image = _process_image(services, source, mime)
        log.info("image processed", extra={**context, "stage": "image", "outcome": "ok"})
    metrics.job_stage("promote")
    key = final_key(
        upload.kind, Visibility(upload.visibility), upload.owner_id, upload.id, "jpg", upload.context
    )
    promote(services.storage, services.settings, upload, key, image.data, image.content_type)
    with services.db.session() as session:
        advance(
            session,
            upload.id,
            UploadStatus.READY,
            final_key=key,
            content_type=image.content_type,
            bytes=len(image.data),
            width=image.width,
            height=image.height,
            sha256=image.sha256,
            error_code=None,
            error_message=None,
        )
    # After `ready`: a failed delete only leaves garbage for the temp clean-up, never a lost upload.
    _delete_temp(services, upload, context)
    after_ready(services, upload)
    log.info("promoted", extra={**context, "stage": "promote", "outcome": "ok", "final_key": key})


def _process_image(services: Services, source: Path, mime: str) -> ProcessedImage:
    """The image stage in a child process under the image limits: a breach is a `Rejected`."""
    settings = services.settings
    output = source.with_name("output.jpg")
    rules = ImageRules(max_pixels=settings.max_image_pixels, memory_bytes=settings.image_memory_bytes)
    limits = ProcessLimits(cpu_seconds=settings.image_cpu_seconds, memory_bytes=settings.image_memory_bytes)
    size = run_limited(write_image, source, mime, rules, output, limits=limits)
    return ProcessedImage(data=output.read_bytes(), width=size["width"], height=size["height"])


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
