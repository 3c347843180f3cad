"""A fetched upload kept on local disk between attempts: the retry after a crash or a full disk processes the
same bytes without fetching them again (a 1 GiB video is not downloaded three times).

Only a complete fetch is kept (the size `fetch` checked is in the file's name, and the file must still have
it to be used), only by a retry on the same machine, and only until the upload ends: ready, rejected or
failed forget it. The directory is the system's temp directory, as for the attempts' work directories.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

KEPT_DIR = Path(tempfile.gettempdir()) / "broker-kept"


def keep(upload_id: str, source: Path) -> bool:
    """Move a completely fetched `source` aside for the next attempt; whether it could be."""
    try:
        KEPT_DIR.mkdir(mode=0o700, exist_ok=True)
        os.replace(source, KEPT_DIR / f"{upload_id}.{source.stat().st_size}")
    except OSError:  # another file system, or the disk is that full: the retry fetches again
        return False
    return True


def take(upload_id: str, workdir: Path) -> Path | None:
    """The kept fetch of this upload, moved into `workdir` as its source; None when there is none intact."""
    for kept in KEPT_DIR.glob(f"{upload_id}.*"):
        size = kept.suffix.removeprefix(".")
        destination = workdir / "source"
        with contextlib.suppress(OSError, ValueError):
            if kept.stat().st_size == int(size):
                os.replace(kept, destination)
                return destination
        kept.unlink(missing_ok=True)
    return None


def forget(upload_id: str) -> None:
    for kept in KEPT_DIR.glob(f"{upload_id}.*"):
        kept.unlink(missing_ok=True)
