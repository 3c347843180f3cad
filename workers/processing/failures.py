"""What an exception from a decoder, demuxer or parser says about the file: one table for every processor.

A hostile or broken file makes libraries raise anything (`OverflowError` from a PDF's xref offset,
`NotImplementedError` from an unknown encryption, an FFmpeg error from a demuxer). Each one that says
something about the bytes is listed here with its verdict: a stable rejection code. Anything not listed is
not a verdict: it escapes the attempt, the sandbox reports it as a crash (`ProcessingCrashed`, with the
exception's type), and the job retries; the worker logs it with the file's sha256, so the next entry of
this table can be written from the log.

`MemoryError` is never listed: the sandbox answers it as `too_large_to_process` itself (a breach of the
attempt's own memory budget), whatever library raised it.
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import av.error
from pypdf.errors import FileNotDecryptedError, LimitReachedError, PyPdfError

from app.domain.rejections import Rejected, RejectionCode


@dataclass(frozen=True)
class Failure:
    """Exceptions of `types` raised while reading `what` mean `code`."""

    types: tuple[type[BaseException], ...]
    code: RejectionCode
    reason: str  # for the message: "{what} {reason}: {error}"


# PDFs (pypdf): its own errors, and what its tokenizer, decompressors and number parsing raise on bad bytes
# (`startxref 99999999999999999999` is an OverflowError).
PDF: tuple[Failure, ...] = (
    Failure((LimitReachedError, RecursionError), RejectionCode.TOO_COMPLEX, "is too complex"),
    Failure((FileNotDecryptedError,), RejectionCode.PDF_ENCRYPTED, "is encrypted"),
    Failure(
        (
            PyPdfError,
            ValueError,
            TypeError,
            KeyError,
            IndexError,
            AttributeError,
            AssertionError,
            EOFError,
            OverflowError,
            zlib.error,
            struct.error,
        ),
        RejectionCode.CORRUPT,
        "cannot be read",
    ),
)

# Videos (PyAV / FFmpeg), around demuxing and decoding only: a muxer's or encoder's error is about what this
# code wrote, never a verdict on the upload. FFmpeg says "invalid data" for bytes that do not parse and "end of
# file" for a stream cut off mid-sample; "patch welcome" and "decoder not found" mean the bytes may be fine but
# this build cannot play them. Other FFmpeg errors (EINVAL, EIO, "bug", "unknown") are not listed: they say
# nothing certain about the file, so they stay crashes to retry, logged with the file's sha256.
VIDEO: tuple[Failure, ...] = (
    Failure(
        (av.error.PatchWelcomeError, av.error.DecoderNotFoundError),
        RejectionCode.UNSUPPORTED_CODEC,
        "uses a feature this build cannot decode",
    ),
    Failure((av.error.InvalidDataError, av.error.EOFError), RejectionCode.CORRUPT, "does not decode"),
)

# Images (Pillow, pillow-heif, libvips' WebP loader).
IMAGE: tuple[Failure, ...] = ()


def rejection_for(error: BaseException, failures: tuple[Failure, ...], what: str) -> Rejected | None:
    """The verdict `error` means for `what` by the table `failures`; None: not a verdict (a crash)."""
    if isinstance(error, MemoryError):
        return None
    for failure in failures:
        if isinstance(error, failure.types):
            return Rejected(failure.code, f"{what} {failure.reason} ({type(error).__name__})")
    return None


@contextlib.contextmanager
def judged(failures: tuple[Failure, ...], what: str) -> Iterator[None]:
    """Turn a listed exception raised inside into its `Rejected`; let every other one through."""
    try:
        yield
    except Rejected:
        raise
    except Exception as error:
        rejected = rejection_for(error, failures, what)
        if rejected is None:
            raise
        raise rejected from error
