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


class Rejected(Exception):
    """Raised by a worker stage when the content must not be promoted."""

    def __init__(self, code: RejectionCode, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.code = code
        self.message = message
