"""Stage 1: get the uploaded object onto local disk, refusing what is too big before reading it."""

from __future__ import annotations

from pathlib import Path

from app.domain.kinds import MediaKind
from app.domain.rejections import Rejected, RejectionCode
from app.storage import Storage


def fetch(storage: Storage, key: str, kind: MediaKind, declared_size: int, workdir: Path) -> Path:
    """HEAD first (the ticket's limit is enforced by S3, but a misconfigured store or a forged event must
    not make us download a huge object), then stream the object to a file in `workdir`."""
    head = storage.head(key)
    if head is None:
        raise Rejected(RejectionCode.MISSING_OBJECT, f"{key} is not in the store")
    if head.size == 0:
        raise Rejected(RejectionCode.EMPTY, "the uploaded file is empty")
    limit = min(kind.max_size, declared_size)
    if head.size > limit:
        raise Rejected(RejectionCode.TOO_LARGE, f"{head.size} bytes stored, the ticket allowed {limit}")
    destination = workdir / "source"
    storage.download(key, destination)
    if destination.stat().st_size > limit:  # replaced between HEAD and GET
        raise Rejected(RejectionCode.TOO_LARGE, "the object grew beyond the ticket's limit")
    return destination
