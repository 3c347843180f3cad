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
from typing import Any

from PIL import Image

from app.domain.rejections import Rejected, RejectionCode

# Bytes of decoder memory per canvas pixel (measured on 16 MP noisy files, bench/hostile.py for 50 MP).
LOSSLESS_BYTES_PER_PIXEL = 8
ALPHA_BYTES_PER_PIXEL = 5
LOSSY_BYTES_PER_PIXEL = 0  # scaled row by row: bounded by the output, not the canvas


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
    """The canvas size and the coding of the first frame (ANMF frames are looked into); CORRUPT otherwise."""
    with path.open("rb") as fp:
        data = fp.read(1 << 16)  # a frame's image chunk follows a few small chunks (ICCP may be larger)
    if len(data) < 30 or data[:4] != b"RIFF" or data[8:12] != b"WEBP":
        raise Rejected(RejectionCode.CORRUPT, "not a readable WEBP image")
    size: tuple[int, int] | None = None
    alpha = False
    pos = 12
    while pos + 8 <= len(data):
        kind, length = data[pos : pos + 4], struct.unpack_from("<I", data, pos + 4)[0]
        body = pos + 8
        if kind == b"VP8X" and body + 10 <= len(data):
            flags = data[body]
            alpha = bool(flags & 0x10)
            size = (
                1 + int.from_bytes(data[body + 4 : body + 7], "little"),
                1 + int.from_bytes(data[body + 7 : body + 10], "little"),
            )
        elif kind == b"ANMF":
            pos = body + 16  # frame header; the frame's own chunks follow
            continue
        elif kind == b"ALPH":
            alpha = True
        elif kind == b"VP8L" and body + 5 <= len(data):
            bits = int.from_bytes(data[body + 1 : body + 5], "little")
            return WebpHeader(*(size or (1 + (bits & 0x3FFF), 1 + ((bits >> 14) & 0x3FFF))), True, True)
        elif kind == b"VP8 " and body + 10 <= len(data):
            width, height = struct.unpack_from("<HH", data, body + 6)
            return WebpHeader(*(size or (width & 0x3FFF, height & 0x3FFF)), False, alpha)
        pos = body + length + (length & 1)  # chunks are padded to an even length
    raise Rejected(RejectionCode.CORRUPT, "not a readable WEBP image: no image data")


def decode_scaled(
    path: Path, header: WebpHeader, size: tuple[int, int]
) -> tuple[Image.Image, int, bytes | None]:
    """The first frame decoded at about `size` (at least, never above the canvas), flattened over white to
    RGB, with its EXIF orientation and ICC profile."""
    pyvips = _pyvips()
    scale = min(1.0, max(size[0] / header.width, size[1] / header.height))
    try:
        image = pyvips.Image.webpload(str(path), n=1, scale=scale, access="sequential", fail_on="error")
        orientation = _field(image, "orientation") or 1
        icc = _field(image, "icc-profile-data")
        if image.hasalpha():
            image = image.flatten(background=[255] * (image.bands - 1))
        mode = "L" if image.bands == 1 else "RGB"
        pixels = image.cast("uchar").write_to_memory()
    except pyvips.Error as exc:
        raise Rejected(RejectionCode.CORRUPT, "WEBP data does not decode") from exc
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
