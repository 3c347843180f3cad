"""Real image files for tests, made on the fly."""

from __future__ import annotations

import io
import struct
import zlib

from PIL import Image, ImageCms, ImageDraw

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


def _png_chunk(kind: bytes, body: bytes) -> bytes:
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))


def huge_png(width: int, height: int) -> bytes:
    """A valid 1-bit PNG of the given size, a few KB on disk, built without ever holding its pixels."""

    return _uniform_png(width, height, bit_depth=1, colour_type=0, row=b"\x00" * ((width + 7) // 8))


def _uniform_png(width: int, height: int, bit_depth: int, colour_type: int, row: bytes) -> bytes:
    """A PNG whose every row is `row` (filter 0), compressed a band at a time: tiny, and never in memory."""
    header = struct.pack(">IIBBBBB", width, height, bit_depth, colour_type, 0, 0, 0)
    band = max(1, (1 << 20) // (len(row) + 1))
    compressor = zlib.compressobj(9)
    parts = [compressor.compress((b"\x00" + row) * band) for _ in range(height // band)]
    parts.append(compressor.compress((b"\x00" + row) * (height % band)))
    parts.append(compressor.flush())
    return (
        b"\x89PNG\r\n\x1a\n"
        + _png_chunk(b"IHDR", header)
        + _png_chunk(b"IDAT", b"".join(parts))
        + _png_chunk(b"IEND", b"")
    )


def _segments(data: bytes) -> tuple[bytes, list[bytes]]:
    """A progressive JPEG cut into its header (up to the first scan) and its scans (SOS + entropy data)."""
    first = data.index(b"\xff\xda")
    scans, pos = [], first
    while data[pos : pos + 2] == b"\xff\xda":
        end = pos + 2 + struct.unpack(">H", data[pos + 2 : pos + 4])[0]
        while True:  # entropy-coded data runs to the next marker that is not stuffing or a restart
            end = data.index(b"\xff", end)
            if data[end + 1] not in (0x00, *range(0xD0, 0xD8)):
                break
            end += 1
        scans.append(data[pos:end])
        pos = end
    return data[:first], scans


def repeated_scan_jpeg(size: int = 4000, repeats: int = 300) -> bytes:
    """A valid progressive JPEG whose last refinement scan is repeated: tiny on disk, each repeat costs a
    full pass over the image's coefficients when decoded (the classic CPU bomb)."""
    out = io.BytesIO()
    photo(size, size).save(out, "JPEG", progressive=True, quality=75)
    header, scans = _segments(out.getvalue())
    return header + b"".join(scans) + scans[-1] * repeats + b"\xff\xd9"


def comment_flood_jpeg(markers: int = 1_300_000) -> bytes:
    """A small JPEG with a flood of empty COM markers before its frame: parsed one marker at a time."""
    data = jpeg(64, 64)
    return data[:2] + b"\xff\xfe\x00\x02" * markers + data[2:]


def chunk_flood_png(chunks: int = 437_000) -> bytes:
    """A small PNG with a flood of empty ancillary chunks before its image data."""

    data = png_with_alpha(16, 16)
    ihdr_end = 8 + 25
    return data[:ihdr_end] + _png_chunk(b"teXt", b"") * chunks + data[ihdr_end:]


def apng(width: int = 320, height: int = 240, frames: int = 3) -> bytes:
    """An animated PNG: a red first frame, then other colours."""
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    images = [Image.new("RGB", (width, height), colours[i % 3]) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "PNG", save_all=True, append_images=images[1:], duration=100, loop=0)
    return out.getvalue()


def animated_webp(width: int = 320, height: int = 240, frames: int = 3) -> bytes:
    colours = [(255, 0, 0), (0, 255, 0), (0, 0, 255)]
    images = [Image.new("RGB", (width, height), colours[i % 3]) for i in range(frames)]
    out = io.BytesIO()
    images[0].save(out, "WEBP", save_all=True, append_images=images[1:], duration=100, lossless=True)
    return out.getvalue()


def rgba16_png(width: int, height: int) -> bytes:
    """A flat half-transparent red 16-bit RGBA PNG, built without holding its pixels (a few hundred KB)."""

    red = struct.pack(">HHHH", 52000, 10000, 10000, 32768)  # half-transparent
    return _uniform_png(width, height, bit_depth=16, colour_type=6, row=red * width)


def rgba_image(width: int, height: int, fmt: str, **options: object) -> bytes:
    """A flat, half-transparent RGBA image saved in `fmt` (WEBP lossless, HEIF ...): tiny on disk, large
    once decoded."""
    out = io.BytesIO()
    Image.new("RGBA", (width, height), (200, 40, 40, 128)).save(out, fmt, **options)
    return out.getvalue()


def large_icc_profile(padding: int = 70_000) -> bytes:
    """The sRGB profile grown past 64 KiB, as a camera's calibrated profile is: padding after its tags, and
    the header's size field saying so (lcms still reads it)."""
    profile = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes() + b"\x00" * padding
    return struct.pack(">I", len(profile)) + profile[4:]


def webp_with_icc(icc: bytes, width: int = 640, height: int = 480) -> bytes:
    """A lossy WebP photo whose ICC profile comes before its image data, as the container requires."""
    out = io.BytesIO()
    photo(width, height).save(out, "WEBP", quality=80, icc_profile=icc)
    return out.getvalue()


def webp_chunk_flood(chunks: int) -> bytes:
    """A small WebP with `chunks` empty unknown chunks before its image chunk (a RIFF reader walks them all)."""
    out = io.BytesIO()
    Image.new("RGB", (16, 16), (255, 0, 0)).save(out, "WEBP", quality=80)
    data = out.getvalue()
    body = b"WEBP" + b"JUNK\x00\x00\x00\x00" * chunks + data[12:]
    return b"RIFF" + struct.pack("<I", len(body)) + body
