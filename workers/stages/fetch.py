"""Stage 1: get the uploaded object onto local disk, refusing what is too big before reading it."""

from __future__ import annotations

from pathlib import Path

from app.domain.kinds import MediaKind
from app.domain.rejections import Rejected, RejectionCode
from app.storage import Storage


def fetch(storage: Storage, key: str, kind: MediaKind, declared_size: int, workdir: Path) -> Path:
    """One GET whose size is checked before its body is read (the ticket's limit is enforced by S3, but a
    misconfigured store or a forged event must not make us download a huge object), streamed to a file in
    `workdir`."""
    limit = min(kind.max_size, declared_size)
    destination = workdir / "source"
    size = storage.download_within(key, destination, limit)
    if size is None:
        raise Rejected(RejectionCode.MISSING_OBJECT, f"{key} is not in the store")
    if size == 0:
        raise Rejected(RejectionCode.EMPTY, "the uploaded file is empty")
    if size > limit:
        raise Rejected(RejectionCode.TOO_LARGE, f"{size} bytes stored, the ticket allowed {limit}")
    return destination
