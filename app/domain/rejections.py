"""Why an upload's content was refused.

A rejection is final: the content itself is wrong, so retrying cannot help. The code is stable (clients and
dashboards key on it); the message is for humans.
"""

from __future__ import annotations

from enum import StrEnum


class RejectionCode(StrEnum):
    TYPE_MISMATCH = "type_mismatch"  # the bytes are not what the ticket declared
    TOO_LARGE = "too_large"  # the stored object exceeds the kind's size limit
    CORRUPT = "corrupt"  # the declared format, but it does not decode
    IMAGE_TOO_LARGE = "image_too_large"  # too many pixels to decode safely
    NOT_PDF = "not_pdf"
    EMPTY = "empty"
    MISSING_OBJECT = "missing_object"  # the ticket's object is gone from temp/ (cleaned up or deleted)
    # Hard limits of a processing attempt (header checks, CPU time, memory): the file costs too much.
    TOO_COMPLEX = "too_complex"  # more CPU time (or structure: scans, markers, chunks) than allowed
    TOO_LARGE_TO_PROCESS = "too_large_to_process"  # more memory than the processing budget
    # Video (the video processor).
    NO_VIDEO_STREAM = "no_video_stream"
    UNSUPPORTED_CODEC = "unsupported_codec"
    VIDEO_TOO_LONG = "video_too_long"
    VIDEO_TOO_LARGE = "video_too_large"
    # PDF (the document processor).
    PDF_ENCRYPTED = "pdf_encrypted"
    PDF_ACTIVE_CONTENT = "pdf_active_content"
    PDF_TOO_MANY_PAGES = "pdf_too_many_pages"


class Rejected(Exception):
    """Raised by a worker stage when the content must not be promoted."""

    def __init__(self, code: RejectionCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
