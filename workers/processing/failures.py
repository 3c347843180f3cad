"""What an exception from a decoder, demuxer or parser says about the file: one table for every processor.

A hostile or broken file makes libraries raise anything (`OverflowError` from a PDF's xref offset,
`NotImplementedError` from an unknown encryption, an FFmpeg error from a demuxer). Each one that says
something about the bytes is listed here with its verdict: a stable rejection code. Anything not listed is
not a verdict: it escapes the attempt, the sandbox reports it as a crash (`ProcessingCrashed`, with the
exception's type), and the job retries; the worker logs it with the file's sha256, so the next entry of
this table can be written from the log.

`MemoryError` is never listed: the sandbox answers it as `too_large_to_process` itself (a breach of the
attempt's own memory budget), whatever library raised it. Libraries also wrap it: pypdf answers a
`MemoryError` while reading a dictionary with `PdfReadError` raised from it, which by the table alone would
be `corrupt`. So an error with a `MemoryError` anywhere behind it (its cause or the error being handled when
it was raised) is that `MemoryError` again.
"""

from __future__ import annotations

import contextlib
import struct
import zlib
from collections.abc import Iterator
from dataclasses import dataclass

import av.error
from PIL import Image
from pypdf.errors import FileNotDecryptedError, LimitReachedError, PyPdfError

from app.domain.rejections import Rejected, RejectionCode


@dataclass(frozen=True)
class Failure:
    """Exceptions of `types` raised while reading `what` mean `code`."""

    types: tuple[type[BaseException], ...]
    code: RejectionCode
    reason: str  # for the message: "{what} {reason}: {error}"
    # Types named "module.QualName", for a library this module must not import (pyvips: a process that loads
    # libvips must not fork decoding children, see `workers.stages.webp`).
    names: frozenset[str] = frozenset()

    def matches(self, error: BaseException) -> bool:
        return isinstance(error, self.types) or any(
            f"{kind.__module__}.{kind.__qualname__}" in self.names for kind in type(error).__mro__
        )


# PDFs (pypdf): its own errors, and what its tokenizer, decompressors and number parsing raise on bad bytes
# (`startxref 99999999999999999999` is an OverflowError). An encrypted file never reaches pypdf's encryption
# code (`workers.processing.pdf._Reader`), so the `NotImplementedError` left is an object stream in a filter
# pypdf cannot decode (`/Filter /Foo`): its objects cannot be inspected, which no viewer can either.
PDF: tuple[Failure, ...] = (
    Failure((LimitReachedError, RecursionError), RejectionCode.TOO_COMPLEX, "is too complex"),
    Failure((FileNotDecryptedError,), RejectionCode.PDF_ENCRYPTED, "is encrypted"),
    Failure(
        (
            PyPdfError,
            NotImplementedError,
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

# Images (Pillow, pillow-heif, libvips' WebP loader), around identifying and decoding the upload only.
# Pillow's decoders say OSError ("cannot identify image file", "image file is truncated", a broken deflate
# stream) and its plugin parsers SyntaxError (a PNG chunk's CRC), ValueError, EOFError, IndexError or
# struct.error on headers that do not parse; pillow-heif raises RuntimeError for what libheif cannot decode,
# and libvips `pyvips.Error`. `DecompressionBombError` is Pillow's own pixel limit (~179 MP), above ours.
IMAGE: tuple[Failure, ...] = (
    Failure((Image.DecompressionBombError,), RejectionCode.IMAGE_TOO_LARGE, "has too many pixels"),
    Failure(
        (OSError, SyntaxError, ValueError, EOFError, IndexError, struct.error, RuntimeError),
        RejectionCode.CORRUPT,
        "does not decode",
        names=frozenset({"pyvips.error.Error"}),
    ),
)


def rejection_for(error: BaseException, failures: tuple[Failure, ...], what: str) -> Rejected | None:
    """The verdict `error` means for `what` by the table `failures`; None: not a verdict (a crash)."""
    if memory_error_behind(error) is not None:
        return None
    for failure in failures:
        if failure.matches(error):
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
        memory = memory_error_behind(error)
        if memory is not None:
            raise memory from None  # the sandbox's answer: `too_large_to_process`
        rejected = rejection_for(error, failures, what)
        if rejected is None:
            raise
        raise rejected from error


def memory_error_behind(error: BaseException) -> MemoryError | None:
    """`error` itself, its cause or the error it was raised while handling, if any is a `MemoryError`."""
    seen: set[int] = set()
    current: BaseException | None = error
    while current is not None and id(current) not in seen:
        if isinstance(current, MemoryError):
            return current
        seen.add(id(current))
        current = current.__cause__ or current.__context__
    return None
