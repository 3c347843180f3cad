"""The image stage: an uploaded photo in, one small, clean JPEG out. The rules, in the order they apply:

1. Only the decoder for the sniffed `mime` may read the file: never Pillow's forty-odd other parsers.
2. The pixel count is checked from the header, before any decode. Pillow's own bomb check refuses only
   above ~179 MP (and merely warns from 89.5 MP); ours fires at `max_pixels`.
3. Animated input (APNG, animated WebP, HEIF sequences): only the first frame (HEIF: the primary image) is
   decoded, as the output is a still JPEG. So the pixel budget is per frame; no frame budget is needed.
4. Decode small: a JPEG is scaled inside the decoder (DCT domain, `draft`) by the largest power of two that
   keeps it at least as big as the output, then LANCZOS does the rest (`_resize_ycbcr`).
5. Transparency goes over white, every mode ends as RGB, a non-sRGB ICC profile (Display P3 from phones,
   Adobe RGB, CMYK) is converted to sRGB, and EXIF orientation is applied.
6. Output: progressive, Huffman-optimised JPEG with no metadata at all: no EXIF (GPS!), XMP, comment or ICC
   profile (the pixels are sRGB, which viewers assume for an untagged image).

Refusals are `Rejected` with a stable code; `structure.check_structure` refuses files whose marker, scan or
chunk counts alone would make decoding slow, before the decoder opens them. The worker runs this stage in a
child process under CPU and memory limits (`workers.sandbox`), which turns a breach into a rejection. `bench/images.py` measures this against the seed and libvips.
"""

from __future__ import annotations

import hashlib
import io
import warnings
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path
from typing import BinaryIO

import pillow_heif
from PIL import ExifTags, Image, ImageCms

from app.domain.rejections import Rejected, RejectionCode
from workers.stages import webp
from workers.stages.structure import check_structure
from workers.stages.verdicts import image_verdict, judged_image

# Depth maps and auxiliary images (portrait mattes) are never used: do not even parse them.
pillow_heif.register_heif_opener(depth_images=False, aux_images=False)

# The one Pillow decoder each sniffed type may use (allow-list, rule 1).
DECODERS: dict[str, str] = {
    "image/jpeg": "JPEG",  # also reads MPO (multi-picture JPEG from phones): the same decoder
    "image/png": "PNG",
    "image/webp": "WEBP",
    "image/heic": "HEIF",
}

_WHITE = (255, 255, 255)
# `_shrink`: box-reduce while at least this factor is left to LANCZOS (Pillow's `reducing_gap`), in bands of
# about this many pixels (4 MB of RGBA).
_REDUCING_GAP = 1.5
_BAND_PIXELS = 1 << 20
_ALPHA_MODES = frozenset({"RGBA", "LA", "PA", "RGBa", "La"})
_RGB_COMPONENT_IDS = [82, 71, 66]  # "R", "G", "B": libjpeg's sign of an RGB-coded (not YCbCr) JPEG
# The same table as `ImageOps.exif_transpose`; applied after the resize, where it touches 12x fewer pixels.
_ORIENTATION_TRANSPOSE: dict[int, Image.Transpose] = {
    2: Image.Transpose.FLIP_LEFT_RIGHT,
    3: Image.Transpose.ROTATE_180,
    4: Image.Transpose.FLIP_TOP_BOTTOM,
    5: Image.Transpose.TRANSPOSE,
    6: Image.Transpose.ROTATE_270,
    7: Image.Transpose.TRANSVERSE,
    8: Image.Transpose.ROTATE_90,
}
_SRGB = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB"))


# Memory a full decode takes per pixel, measured on 50 MP RGBA files (bench/hostile.py): Pillow holds PNG
# pixels in 4 bytes; libheif holds YCbCr planes and alpha beside the RGBA it converts to (~7 bytes);
# Pillow's WebP plugin (only the fallback, see webp.py) keeps libwebp's two canvases and a copy (~18 bytes).
# JPEG is decoded at a reduced scale (`draft`), so its full size says little: it is left to the OS limit.
DECODE_BYTES_PER_PIXEL: dict[str, int] = {"PNG": 4, "HEIF": 7, "WEBP": 18}


@dataclass(frozen=True)
class ImageRules:
    """Limits for one kind of image; the defaults are the design's. No frame budget: see rule 3."""

    # 50 MP is above every phone camera (48 MP sensors) yet keeps the worst decode (a PNG, no draft
    # scaling) at ~200 MB of RGBA. Must stay below Pillow's 179 MP hard limit to be the check that fires.
    max_pixels: int = 50_000_000
    # Fit inside max_edge x max_edge, never upscale (the seed's size: full width on any phone screen).
    max_edge: int = 1200
    # libjpeg quality with 4:2:0 chroma (the seed's): artefacts are hard to see in photos at this size.
    quality: int = 85
    # Resample luma and chroma on two threads (Pillow releases the GIL). False when the worker already
    # runs one process per core and a second thread would only contend.
    parallel: bool = True
    # Memory the decode may need, checked from the header against `DECODE_BYTES_PER_PIXEL` (None: not
    # checked). The worker passes its processing budget, which the OS enforces anyway; the check makes the
    # refusal `too_large_to_process` up front instead of a decoder failing on an allocation.
    memory_bytes: int | None = None


@dataclass(frozen=True)
class ProcessedImage:
    """The stage's output: the JPEG to promote and what the media record needs about it."""

    data: bytes
    width: int
    height: int
    content_type: str = "image/jpeg"

    @property
    def sha256(self) -> str:
        """Hex digest of `data`, recorded with the media."""
        return hashlib.sha256(self.data).hexdigest()


def process_image(source: Path, mime: str, rules: ImageRules = ImageRules()) -> ProcessedImage:
    """Turn the upload at `source` (sniffed as `mime`) into the JPEG to store.

    Raises `Rejected` with TYPE_MISMATCH (a type this stage does not process), IMAGE_TOO_LARGE (the header
    says more than `rules.max_pixels`; nothing is decoded) or CORRUPT (the allowed decoder cannot identify
    or fully decode the bytes; HTML sent as image/jpeg lands here).
    """
    decoder = DECODERS.get(mime)
    if decoder is None:
        raise Rejected(RejectionCode.TYPE_MISMATCH, f"{mime} is not an image type this stage processes")
    check_structure(source, mime)
    small, orientation, icc = _decode_to_size(source, decoder, rules)
    # The decoded full-size image is gone by now (it lived in _decode_to_size): the encode runs lean.
    out = _to_srgb(small, icc)
    if (method := _ORIENTATION_TRANSPOSE.get(orientation)) is not None:  # FLIP_LEFT_RIGHT is 0
        out = out.transpose(method)
    return ProcessedImage(data=_encode(out, rules.quality), width=out.width, height=out.height)


def write_image(source: Path, mime: str, rules: ImageRules, output: Path) -> dict[str, int]:
    """`process_image` with its JPEG written to `output`: the form a limited child process runs, whose
    answer to the worker must be small and plain (see `workers.sandbox`)."""
    image = process_image(source, mime, rules)
    output.write_bytes(image.data)
    return {"width": image.width, "height": image.height}


def _decode_to_size(source: Path, decoder: str, rules: ImageRules) -> tuple[Image.Image, int, bytes | None]:
    """The image at output size (not yet oriented or colour-managed), its EXIF orientation and ICC profile."""
    if decoder == "WEBP":  # checked before Pillow opens it: Pillow decodes the whole canvas at open
        header = webp.read_header(source)
        canvas = (header.width, header.height)
        _check_pixels(canvas, rules.max_pixels)
        if webp.scaled_decoder_usable():  # libwebp's scaling decoder (webp.py); else Pillow's, below
            _check_memory(canvas, decoder, header.decode_bytes, rules.memory_bytes)
            target = _fit(canvas, rules.max_edge)
            decoded, orientation, icc = webp.decode_scaled(source, header, target)
            return _resample(decoded, target), orientation, icc
        _check_decode_memory(canvas, decoder, rules.memory_bytes)
    with source.open("rb") as fp, _open(fp, decoder, rules.max_pixels) as img:
        _check_decode_memory(img.size, decoder, rules.memory_bytes)
        target = _fit(img.size, rules.max_edge)
        if decoder == "HEIF":
            return _decode_heif(source, target), _orientation(img), img.info.get("icc_profile")
        fast = _ycbcr_coded(img)
        # JPEG: DCT-domain scaling, never below target (and YCbCr kept as is).
        img.draft("YCbCr" if fast else None, target)
        _load(img, decoder)
        small = _resize_ycbcr(img, target, rules.parallel) if fast else _shrink(img, target)
        return small, _orientation(img), img.info.get("icc_profile")


def _open(fp: BinaryIO, decoder: str, max_pixels: int) -> Image.Image:
    """Identify the file with the one allowed decoder and check its pixel count; reads the header only."""
    # The table's messages name the exception, not its text (Pillow's names the worker's temp file).
    with judged_image(f"the {decoder} image"), warnings.catch_warnings():
        # Pillow warns from 89.5 MP; our own, lower limit is checked right below.
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        try:
            img = Image.open(fp, formats=[decoder])
        except Image.DecompressionBombError as exc:  # Pillow's limit (~179 MP) is above ours: quote ours
            raise Rejected(RejectionCode.IMAGE_TOO_LARGE, f"more than {max_pixels:,} pixels") from exc
    _check_pixels(img.size, max_pixels)
    return img


def _check_pixels(size: tuple[int, int], max_pixels: int) -> None:
    if size[0] * size[1] > max_pixels:
        raise Rejected(RejectionCode.IMAGE_TOO_LARGE, f"{size[0]}x{size[1]} is over {max_pixels:,} pixels")


def _check_decode_memory(size: tuple[int, int], decoder: str, budget: int | None) -> None:
    _check_memory(size, decoder, size[0] * size[1] * DECODE_BYTES_PER_PIXEL.get(decoder, 0), budget)


def _check_memory(size: tuple[int, int], decoder: str, needed: int, budget: int | None) -> None:
    if budget is not None and needed > budget:
        raise Rejected(
            RejectionCode.TOO_LARGE_TO_PROCESS,
            f"decoding this {size[0]}x{size[1]} {decoder} image needs about {needed // 2**20} MiB; "
            f"the limit is {budget // 2**20} MiB",
        )


def _fit(size: tuple[int, int], max_edge: int) -> tuple[int, int]:
    """Inside max_edge x max_edge, aspect kept, never upscaled, never 0 px (square box: rotation-proof)."""
    width, height = size
    scale = min(1.0, max_edge / max(width, height))
    return max(1, round(width * scale)), max(1, round(height * scale))


def _ycbcr_coded(img: Image.Image) -> bool:
    """Whether libjpeg can hand over this JPEG's YCbCr samples unconverted (its jdapimin.c rules)."""
    if img.format not in ("JPEG", "MPO") or img.mode != "RGB":
        return False
    if "jfif" in img.info:
        return True
    if "adobe_transform" in img.info:
        return img.info["adobe_transform"] != 0  # 0 means RGB-coded
    return [layer[0] for layer in getattr(img, "layer", [])] != _RGB_COMPONENT_IDS


def _load(img: Image.Image, decoder: str) -> None:
    """Decode the (first frame's) pixels. Truncated is CORRUPT: LOAD_TRUNCATED_IMAGES stays off."""
    with judged_image(f"the {decoder} data"):
        img.load()


def _orientation(img: Image.Image) -> int:
    """EXIF orientation (1 when absent). A malformed EXIF block only loses its orientation: what the table
    calls corrupt, or an entry of the wrong type."""
    try:
        return int(img.getexif().get(ExifTags.Base.Orientation, 1))
    except (TypeError, KeyError):
        return 1
    except Exception as error:
        if image_verdict(error, "the EXIF block") is None:
            raise
        return 1


def _resize_ycbcr(img: Image.Image, size: tuple[int, int], parallel: bool) -> Image.Image:
    """The hot path (YCbCr JPEGs): luma to `size`, chroma straight to the 4:2:0 grid it is stored at.

    The encoder averages each 2x2 block of chroma; LANCZOS to half size and each sample repeated 2x2 makes
    that average exact and sharper than a box, for less work than three full-size channels, and with no
    YCbCr<->RGB conversion on either side. Measured: ~10% less CPU, ~0.1 dB more PSNR than resizing RGB.
    """
    if not parallel:
        planes = [_resample(img.getchannel(0), size), _chroma(img, 1, size), _chroma(img, 2, size)]
        return Image.merge("YCbCr", planes)
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="image-chroma") as pool:
        later = {band: pool.submit(_chroma, img, band, size) for band in (1, 2)}
        luma = _resample(img.getchannel(0), size)
        # A helper starved of CPU (busy machine) has not started yet: take its work back, never wait idle.
        chroma = [_chroma(img, band, size) if f.cancel() else f.result() for band, f in later.items()]
        return Image.merge("YCbCr", (luma, *chroma))


def _chroma(img: Image.Image, band: int, size: tuple[int, int]) -> Image.Image:
    plane, half = img.getchannel(band), ((size[0] + 1) // 2, (size[1] + 1) // 2)
    # reducing_gap 1.5: a box pre-shrink by 2 first where that still leaves 1.5x to LANCZOS; chroma is
    # a quarter of the information and the 2x2 average follows anyway.
    small = plane.resize(half, Image.Resampling.LANCZOS, reducing_gap=1.5)
    return small.resize(size, Image.Resampling.NEAREST, box=(0, 0, size[0] / 2, size[1] / 2))


def _decode_heif(source: Path, size: tuple[int, int]) -> Image.Image:
    """HEIF at `size`: libheif decodes into one buffer, and the bands are views of it, not copies.

    (pillow-heif's Pillow plugin copies the whole decode into a second image: 420 MB at 50 MP RGBA.)
    """
    with judged_image("the HEIF data"):
        heif = pillow_heif.open_heif(source, convert_hdr_to_8bit=True)
        primary = heif[heif.primary_index]
        data = primary.data
    (width, height), mode, stride = primary.size, primary.mode, primary.stride

    def rows(top: int, bottom: int) -> Image.Image:
        view = data[top * stride : bottom * stride]
        return Image.frombuffer(mode, (width, bottom - top), view, "raw", mode, stride, 1)

    return _shrink_bands((width, height), rows, size)


def _shrink(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    """Any decoded Pillow image to `size`, flattened (see `_shrink_bands`)."""
    return _shrink_bands(img.size, lambda top, bottom: img.crop((0, top, img.width, bottom)), size)


def _shrink_bands(
    full: tuple[int, int], rows: Callable[[int, int], Image.Image], size: tuple[int, int]
) -> Image.Image:
    """An image, given as bands of rows, to `size`, flattened, holding no second full-size copy of it.

    Flattening (alpha over white, 16-bit to 8-bit, palette to RGB) and `reduce` (the box pre-shrink that
    `reducing_gap` would do) are local, so they run band by band, each band a few MB; only the reduced
    image goes to LANCZOS. Whole-image, the same steps cost up to three copies of a 200 MB RGBA decode (Pillow
    premultiplies alpha into a copy to resize it): 640 MB for a 50 MP RGBA PNG, against ~200 MB here.
    """
    width, height = full
    factor = max(1, int(min(width / size[0], height / size[1]) / _REDUCING_GAP))
    band_rows = factor * max(1, _BAND_PIXELS // (width * factor))
    reduced: Image.Image | None = None
    for top in range(0, height, band_rows):
        band = _flatten(rows(top, min(height, top + band_rows)))
        if factor > 1:
            band = band.reduce(factor)
        if reduced is None:
            reduced = Image.new(band.mode, (-(-width // factor), -(-height // factor)))
        reduced.paste(band, (0, top // factor))
    assert reduced is not None  # an image has at least one row
    return _resample(reduced, size)


def _resample(img: Image.Image, size: tuple[int, int]) -> Image.Image:
    # reducing_gap 2.0 (box pre-shrink only while >= 2x is left to LANCZOS) is indistinguishable from a
    # full LANCZOS and matters for big PNG/WebP/HEIF, which have no draft scaling. A JPEG has < 2x left.
    return img if img.size == size else img.resize(size, Image.Resampling.LANCZOS, reducing_gap=2.0)


def _flatten(img: Image.Image) -> Image.Image:
    """Bring any decoded mode to one the resampler handles well (RGB, L or CMYK), alpha over white."""
    if img.mode in ("RGB", "L", "CMYK") and "transparency" not in img.info:
        return img
    if img.mode.startswith("I") or img.mode == "F":
        # 16-bit grey PNGs open as I;16: convert("L") would clip at 255 instead of scaling 65535 to 255.
        return img.point(lambda v: v * (1 / 257)).convert("L")
    if img.mode in _ALPHA_MODES or "transparency" in img.info:
        rgba = img.convert("RGBA")
        white = Image.new("RGB", img.size, _WHITE)
        white.paste(rgba, mask=rgba.getchannel("A"))
        return white
    return img.convert("RGB")  # P, 1, LAB, HSV ...


def _to_srgb(img: Image.Image, icc: bytes | None) -> Image.Image:
    """RGB (or YCbCr, which the encoder takes as is) in sRGB: the embedded profile applied, if any."""
    transform = _srgb_transform(icc, "CMYK" if img.mode == "CMYK" else "RGB")
    if transform is not None:
        return transform.apply(img if img.mode in ("RGB", "CMYK") else img.convert("RGB"))
    return img if img.mode in ("RGB", "YCbCr") else img.convert("RGB")


@lru_cache(maxsize=16)  # phones reuse a handful of profiles; building a transform costs ~3 ms
def _srgb_transform(icc: bytes | None, mode: str) -> ImageCms.ImageCmsTransform | None:
    """A transform from the embedded profile to sRGB, or None when none is needed or possible.

    A profile that does not parse or fit the pixels is ignored, not a rejection: the photo is still fine.
    """
    if not icc:
        return None
    try:
        profile = ImageCms.ImageCmsProfile(io.BytesIO(icc))
        if "sRGB" in (profile.profile.profile_description or ""):
            return None  # already sRGB: skip a ~25 ms no-op transform
        # NOCACHE: lcms's one-pixel cache is not safe when threads share a cached transform.
        return ImageCms.buildTransform(profile, _SRGB, mode, "RGB", flags=ImageCms.Flags.NOCACHE)
    except (ImageCms.PyCMSError, OSError, ValueError, TypeError):
        return None


def _encode(img: Image.Image, quality: int) -> bytes:
    """Progressive (renders early on slow links), optimised Huffman tables, nothing but pixels.

    Pillow copies a comment from `img.info`, so info is emptied; EXIF, XMP, ICC are written only if passed.
    """
    img.info = {}
    buf = io.BytesIO()
    img.save(buf, "JPEG", quality=quality, optimize=True, progressive=True)
    return buf.getvalue()
