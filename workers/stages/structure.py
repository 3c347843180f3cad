"""Cheap structure checks that run before any decoder sees the file.

A decoder's cost grows with the file's structure, not only with its pixels: every progressive JPEG scan
re-decodes the whole image's coefficients (a 4000x4000 JPEG with its last refinement scan repeated 300 times
takes 15 s to decode from 104 KB), and a parser walks every marker or chunk (1.3 M JPEG comments, or 437 k
PNG chunks, fit in 5 MiB and take seconds). Counting them is a walk over the file's headers at C speed
(regular expressions, struct), refused with `too_complex` long before the decoder would be slow.
"""

from __future__ import annotations

import mmap
import re
import struct
from pathlib import Path

from app.domain.rejections import Rejected, RejectionCode

# A baseline JPEG has 1 scan, a progressive one from a camera or libjpeg about 10 (up to ~20 with
# custom scan scripts); 100 leaves room for any encoder while bounding the decode at a few seconds.
MAX_JPEG_SCANS = 100
# Phones write ~10-40 markers (APPn for EXIF/XMP/ICC chunks/MPF, DQT, DHT, SOF, SOS ...).
MAX_JPEG_MARKERS = 1000
# IDAT chunks are usually 8-64 KiB; 20,000 covers a 15 MiB PNG cut in 1 KiB chunks. Ancillary chunks
# (text, time, colour info) are a handful in real files; APNG frame chunks (fcTL/fdAT) are not counted there.
MAX_PNG_CHUNKS = 20_000
MAX_PNG_ANCILLARY_CHUNKS = 1000

_SOS, _EOI = 0xDA, 0xD9
_STANDALONE = frozenset({0x01, *range(0xD0, 0xD8)})  # TEM, RST0-7: no length field
# In entropy-coded data 0xFF is followed by 0x00 (stuffing) or a restart marker; anything else ends it.
_NEXT_MARKER = re.compile(rb"\xff[^\x00\xd0-\xd7\xff]")
_PNG_SIGNATURE = b"\x89PNG\r\n\x1a\n"
_APNG_FRAME_CHUNKS = frozenset({b"fcTL", b"fdAT"})


def check_structure(path: Path, mime: str) -> None:
    """Refuse a file whose structure alone would make decoding it expensive (`too_complex`)."""
    if mime not in ("image/jpeg", "image/png") or path.stat().st_size == 0:
        return
    with path.open("rb") as fp, mmap.mmap(fp.fileno(), 0, access=mmap.ACCESS_READ) as data:
        if mime == "image/jpeg":
            _check_jpeg(data)
        else:
            _check_png(data)


def _check_jpeg(data: mmap.mmap) -> None:
    """Count markers and scans of the first image (an MPO's later images are never decoded)."""
    pos, markers, scans = 2, 0, 0
    size = len(data)
    while pos + 4 <= size:
        if data[pos] != 0xFF:
            return  # not where a marker should be: the decoder will call it corrupt
        marker = data[pos + 1]
        if marker == 0xFF:  # fill bytes before a marker
            pos += 1
            continue
        markers += 1
        if markers > MAX_JPEG_MARKERS:
            raise Rejected(RejectionCode.TOO_COMPLEX, f"more than {MAX_JPEG_MARKERS} JPEG markers")
        if marker == _EOI:
            return
        if marker in _STANDALONE:
            pos += 2
            continue
        (length,) = struct.unpack_from(">H", data, pos + 2)
        pos += 2 + length
        if marker == _SOS:
            scans += 1
            if scans > MAX_JPEG_SCANS:
                raise Rejected(RejectionCode.TOO_COMPLEX, f"more than {MAX_JPEG_SCANS} JPEG scans")
            found = _NEXT_MARKER.search(data, pos)
            if found is None:
                return
            pos = found.start()


def _check_png(data: mmap.mmap) -> None:
    if data[:8] != _PNG_SIGNATURE:
        return
    pos, chunks, ancillary = 8, 0, 0
    size = len(data)
    while pos + 8 <= size:
        length, kind = struct.unpack_from(">I4s", data, pos)
        chunks += 1
        if chunks > MAX_PNG_CHUNKS:
            raise Rejected(RejectionCode.TOO_COMPLEX, f"more than {MAX_PNG_CHUNKS} PNG chunks")
        if kind[0] & 0x20 and kind not in _APNG_FRAME_CHUNKS:  # lower-case first letter: ancillary
            ancillary += 1
            if ancillary > MAX_PNG_ANCILLARY_CHUNKS:
                raise Rejected(
                    RejectionCode.TOO_COMPLEX, f"more than {MAX_PNG_ANCILLARY_CHUNKS} ancillary PNG chunks"
                )
        if kind == b"IEND":
            return
        pos += 12 + length
