"""WebP decoding for the image stage, through libwebp's scaling decoder (libvips' `webpload` only).

Why not Pillow: its WebP plugin opens every file with libwebp's animation decoder, which decodes the whole
canvas at open time into two full-size RGBA buffers that Pillow then copies: a 2 KB lossless 50 MP WebP
peaked at 1032 MB. libwebp itself can scale while it decodes (`WebPDecoderConfig.options.use_scaling`),
row by row, and libvips' loader exposes that as `scale`: a lossy 50 MP WebP decodes to 1200 px in a few MB.
Lossless (VP8L) data still needs its full-size ARGB buffer and caches (backward references may point
anywhere above): measured ~8 bytes per pixel on incompressible content, so the header check budgets it.
Lossy data with an alpha plane keeps that plane (1 byte per pixel) and its lossless decode (4) at full size.

Only the WebP loader is ever called (never `new_from_file`, which sniffs and would try libvips' other
loaders). pyvips is imported on first use: the worker's parent process never loads libvips, so the forked
child that decodes (`workers.sandbox`) starts with no libvips threads or state inherited across the fork.
libvips is not fork-safe: a child of a process that already loaded it waits forever for thread-pool threads
that were not copied (measured: the 45 s deadline, then a false `too_complex`). So a process that inherited
pyvips (a test run, a bench) is told `scaled_decoder_usable() is False` and the image stage falls back to
Pillow's WebP decoder, under its own (much larger) memory model.
"""

from __future__ import annotations

import os
import struct
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any, BinaryIO

from PIL import Image

from app.domain.rejections import Rejected, RejectionCode
from workers.stages.verdicts import judged_image

# Bytes of decoder memory per canvas pixel (measured on 16 MP noisy files, bench/hostile.py for 50 MP).
LOSSLESS_BYTES_PER_PIXEL = 8
ALPHA_BYTES_PER_PIXEL = 5
LOSSY_BYTES_PER_PIXEL = 0  # scaled row by row: bounded by the output, not the canvas
# A still image has VP8X, ICCP, EXIF and XMP before its image chunk, an animation ANIM, an ANMF and its ALPH:
# a handful. Beyond this, walking headers of empty chunks is all the file makes a reader do.
MAX_CHUNKS_BEFORE_IMAGE = 1000


@dataclass(frozen=True)
class WebpHeader:
    """What the RIFF chunks say before any decoding: canvas size and how the first frame is coded."""

    width: int
    height: int
    lossless: bool
    alpha: bool

    @property
    def decode_bytes(self) -> int:
        per_pixel = (
            LOSSLESS_BYTES_PER_PIXEL
            if self.lossless
            else ALPHA_BYTES_PER_PIXEL
            if self.alpha
            else LOSSY_BYTES_PER_PIXEL
        )
        return self.width * self.height * per_pixel


def read_header(path: Path) -> WebpHeader:
    """The canvas size and the coding of the first frame (ANMF frames are looked into); CORRUPT otherwise.

    The RIFF chunks are walked in the file, reading only their headers and the few bytes that matter: the
    chunks before the first frame (an ICC profile, EXIF, XMP) may be of any size. A reader of a fixed window
    (64 KiB) called a photo with a larger ICC profile (a camera's calibrated profile) corrupt."""
    with path.open("rb") as fp:
        riff = fp.read(12)
        if len(riff) < 12 or riff[:4] != b"RIFF" or riff[8:12] != b"WEBP":
            raise Rejected(RejectionCode.CORRUPT, "not a readable WEBP image")
        return _first_frame(fp)


def _first_frame(fp: BinaryIO) -> WebpHeader:
    size: tuple[int, int] | None = None
    alpha = False
    for _ in range(MAX_CHUNKS_BEFORE_IMAGE):
        start = fp.tell()
        head = fp.read(8)
        if len(head) < 8:
            raise Rejected(RejectionCode.CORRUPT, "not a readable WEBP image: no image data")
        kind, length = head[:4], struct.unpack_from("<I", head, 4)[0]
        if kind == b"ANMF":
            fp.seek(16, os.SEEK_CUR)  # frame header; the frame's own chunks follow
            continue
        body = fp.read(min(length, 10))
        if kind == b"VP8X" and len(body) == 10:
            alpha = bool(body[0] & 0x10)
            size = (1 + int.from_bytes(body[4:7], "little"), 1 + int.from_bytes(body[7:10], "little"))
        elif kind == b"ALPH":
            alpha = True
        elif kind == b"VP8L" and len(body) >= 5:
            bits = int.from_bytes(body[1:5], "little")
            return WebpHeader(*(size or (1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF))), True, True)
        elif kind == b"VP8 " and len(body) == 10:
            width, height = struct.unpack_from("<HH", body, 6)
            return WebpHeader(*(size or (width & 0x3FFF, height & 0x3FFF)), False, alpha)
        fp.seek(start + 8 + length + (length & 1))  # chunks are padded to an even length
    raise Rejected(
        RejectionCode.TOO_COMPLEX, f"more than {MAX_CHUNKS_BEFORE_IMAGE} WEBP chunks before the image"
    )


def decode_scaled(
    path: Path, header: WebpHeader, size: tuple[int, int]
) -> tuple[Image.Image, int, bytes | None]:
    """The first frame decoded at about `size` (at least, never above the canvas), flattened over white to
    RGB, with its EXIF orientation and ICC profile."""
    pyvips = _pyvips()
    scale = min(1.0, max(size[0] / header.width, size[1] / header.height))
    with judged_image("the WEBP data"):
        image = pyvips.Image.webpload(str(path), n=1, scale=scale, access="sequential", fail_on="error")
        orientation = _field(image, "orientation") or 1
        icc = _field(image, "icc-profile-data")
        if image.hasalpha():
            image = image.flatten(background=[255] * (image.bands - 1))
        mode = "L" if image.bands == 1 else "RGB"
        pixels = image.cast("uchar").write_to_memory()
    return Image.frombytes(mode, (image.width, image.height), pixels), int(orientation), icc


_loaded_in: int | None = None  # the process that imported pyvips through `_pyvips`


def scaled_decoder_usable() -> bool:
    """False in a process that inherited libvips across a fork (see the module docstring)."""
    return "pyvips" not in sys.modules or _loaded_in == os.getpid()


def _field(image: Any, name: str) -> Any:
    return image.get(name) if image.get_typeof(name) != 0 else None


def _pyvips() -> Any:
    global _loaded_in
    import pyvips  # on first use, in the decoding child: see the module docstring

    _loaded_in = _loaded_in or os.getpid()

    pyvips.cache_set_max(0)  # one decode per process: a cache would only hold memory
    pyvips.concurrency_set(1)  # the child has one job; helper threads would only add stacks to the budget
    return pyvips
