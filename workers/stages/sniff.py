"""Stage 2: what the bytes really are. The declared type (pinned in the ticket) must match the content."""

from __future__ import annotations

from pathlib import Path

import filetype

from app.domain.rejections import Rejected, RejectionCode

# Types the sniffer reports under another name than the one clients declare. An animated PNG is a PNG to
# every client (and to the image stage, which keeps its first frame).
_SAME_TYPE = {"image/heif": "image/heic", "image/apng": "image/png"}


def sniff(path: Path, declared_type: str) -> str:
    """The content type detected from the file's leading bytes; refuses a mismatch with the declared one."""
    guessed = filetype.guess_mime(str(path))
    actual = _SAME_TYPE.get(guessed, guessed) if guessed else None
    if actual != declared_type:
        found = actual or "unrecognised content"
        raise Rejected(RejectionCode.TYPE_MISMATCH, f"declared {declared_type}, but the file is {found}")
    return actual
