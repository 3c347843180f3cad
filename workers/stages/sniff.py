"""Stage 2: what the bytes really are. The declared type (pinned in the ticket) must match the content."""

from __future__ import annotations

from pathlib import Path

import filetype

from app.domain.rejections import Rejected, RejectionCode

# Types the sniffer reports under another name than the one clients declare. An animated PNG is a PNG to
# every client (and to the image stage, which keeps its first frame).
_SAME_TYPE = {"image/heif": "image/heic", "image/apng": "image/png"}
# ISO base media files differ only by their `ftyp` brand: an iPhone's `.mov` (`qt  `), an Android `.mp4`
# (`isom`, `mp42`), an `.m4v` or a `.3gp` are one container to FFmpeg, and apps label them loosely. Any of them
# declared as MP4 or QuickTime is what was promised; the video processor probes the streams next.
_ISO_MEDIA = frozenset({"video/mp4", "video/quicktime", "video/x-m4v", "video/3gpp"})
_VIDEO_DECLARATIONS = frozenset({"video/mp4", "video/quicktime"})


def sniff(path: Path, declared_type: str) -> str:
    """The content type detected from the file's leading bytes; refuses a mismatch with the declared one."""
    guessed = filetype.guess_mime(str(path))
    actual = _SAME_TYPE.get(guessed, guessed) if guessed else None
    if declared_type in _VIDEO_DECLARATIONS and actual in _ISO_MEDIA:
        return declared_type
    if actual != declared_type:
        found = actual or "unrecognised content"
        # A document's refusal has its own code: the app tells the user "this is not a PDF".
        code = RejectionCode.NOT_PDF if declared_type == "application/pdf" else RejectionCode.TYPE_MISMATCH
        raise Rejected(code, f"declared {declared_type}, but the file is {found}")
    return actual
