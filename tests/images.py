"""Real image files for tests, made on the fly."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image, ImageDraw

ORIENTATION = 0x0112
GPS_IFD = 0x8825


def photo(width: int, height: int) -> Image.Image:
    """An RGB picture with a red block in the top-left corner, so rotations can be told apart."""
    image = Image.linear_gradient("L").resize((width, height)).convert("RGB")
    draw = ImageDraw.Draw(image)
    draw.rectangle((0, 0, width // 4, height // 4), fill=(255, 0, 0))
    return image


def jpeg(
    width: int, height: int, orientation: int | None = None, gps: bool = False, quality: int = 90
) -> bytes:
    image = photo(width, height)
    exif = Image.Exif()
    if orientation:
        exif[ORIENTATION] = orientation
    if gps:
        exif[0x010F] = "PhoneMaker"  # Make
        exif.get_ifd(GPS_IFD).update({1: "N", 2: (48.0, 51.0, 29.0), 3: "E", 4: (2.0, 17.0, 40.0)})
    out = io.BytesIO()
    image.save(out, "JPEG", quality=quality, exif=exif.tobytes())
    return out.getvalue()


def png_with_alpha(width: int = 400, height: int = 300) -> bytes:
    """Left half opaque blue, right half fully transparent (with black RGB underneath)."""
    image = Image.new("RGBA", (width, height), (0, 0, 0, 0))
    ImageDraw.Draw(image).rectangle((0, 0, width // 2 - 1, height), fill=(0, 0, 255, 255))
    out = io.BytesIO()
    image.save(out, "PNG")
    return out.getvalue()


def truncated_jpeg() -> bytes:
    data = jpeg(800, 600)
    return data[: len(data) // 2]


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of the given size, a few KB on disk, built without ever holding its pixels."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)
    row = b"\x00" * (1 + (width + 7) // 8)
    compressor = zlib.compressobj(9)
    parts = [compressor.compress(row * 256) for _ in range(height // 256)]
    parts.append(compressor.compress(row * (height % 256)))
    parts.append(compressor.flush())
    return (
        b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", b"".join(parts)) + chunk(b"IEND", b"")
    )
