"""Structure checks on real files: ordinary images pass, floods and scan bombs are refused in milliseconds."""

from __future__ import annotations

import io
import time
from pathlib import Path

import pytest
from PIL import Image

from app.domain.rejections import Rejected, RejectionCode
from tests import images
from workers.stages import webp
from workers.stages.structure import MAX_JPEG_SCANS, check_structure


def _file(tmp_path: Path, data: bytes) -> Path:
    path = tmp_path / "upload"
    path.write_bytes(data)
    return path


def _progressive(size: int = 640) -> bytes:
    out = io.BytesIO()
    images.photo(size, size).save(out, "JPEG", progressive=True, quality=85)
    return out.getvalue()


# Files are made inside the test (ids name them): as parameters, their bytes would become the test ids.
ORDINARY = {
    "phone-jpeg": (lambda: images.jpeg(1600, 1200, orientation=6, gps=True), "image/jpeg"),
    "progressive-jpeg": (_progressive, "image/jpeg"),
    "png-with-alpha": (images.png_with_alpha, "image/png"),
    "apng-40-frames": (lambda: images.apng(frames=40), "image/png"),
    "huge-1-bit-png": (lambda: images.huge_png(3000, 3000), "image/png"),
}
BOMBS = {
    "jpeg-4000sq-300-repeated-scans": (lambda: images.repeated_scan_jpeg(4000, 300), "image/jpeg"),
    "jpeg-1.3M-com-markers": (lambda: images.comment_flood_jpeg(1_300_000), "image/jpeg"),
    "png-437k-chunks": (lambda: images.chunk_flood_png(437_000), "image/png"),
}


@pytest.mark.parametrize("name", ORDINARY)
def test_ordinary_images_pass(tmp_path: Path, name: str):
    make, mime = ORDINARY[name]
    data = make()
    check_structure(_file(tmp_path, data), mime)


def test_scans_up_to_the_limit_pass_and_one_more_is_too_complex(tmp_path: Path):
    header, scans = images._segments(_progressive(200))
    allowed = header + b"".join(scans) + scans[-1] * (MAX_JPEG_SCANS - len(scans)) + b"\xff\xd9"
    check_structure(_file(tmp_path, allowed), "image/jpeg")
    with Image.open(io.BytesIO(allowed)) as img:
        img.load()  # still a valid JPEG: the check counts, it does not judge validity

    with pytest.raises(Rejected) as refused:
        check_structure(_file(tmp_path, allowed[:-2] + scans[-1] + b"\xff\xd9"), "image/jpeg")
    assert refused.value.code is RejectionCode.TOO_COMPLEX


@pytest.mark.parametrize("name", BOMBS)
def test_bombs_are_refused_well_under_a_second(tmp_path: Path, name: str):
    make, mime = BOMBS[name]
    path = _file(tmp_path, make())
    started = time.process_time()
    with pytest.raises(Rejected) as refused:
        check_structure(path, mime)
    assert refused.value.code is RejectionCode.TOO_COMPLEX
    assert time.process_time() - started < 0.5  # CPU time, not wall: a busy machine does not change it


@pytest.mark.parametrize(
    ("options", "lossless"),
    [
        ({"lossless": True}, True),
        ({"quality": 80}, False),
        ({"lossless": True, "save_all": True}, True),
        ({"quality": 80, "save_all": True}, False),
    ],
)
@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_the_webp_header_gives_size_and_coding_of_every_kind(
    tmp_path: Path, options: dict, lossless: bool, mode: str
):
    out = io.BytesIO()
    Image.new(mode, (333, 222), (10, 20, 30, 40)[: len(mode)]).save(out, "WEBP", **options)
    header = webp.read_header(_file(tmp_path, out.getvalue()))
    assert (header.width, header.height, header.lossless) == (333, 222, lossless)
    if not lossless:  # lossy alpha lives in its own ALPH chunk; lossless carries it in the pixels
        assert header.alpha is (mode == "RGBA")


def test_a_webp_without_image_data_is_corrupt(tmp_path: Path):
    with pytest.raises(Rejected) as refused:
        webp.read_header(_file(tmp_path, b"RIFF\x20\x00\x00\x00WEBPJUNK" + b"\x00" * 40))
    assert refused.value.code is RejectionCode.CORRUPT


def test_a_webp_icc_profile_larger_than_64_kib_is_walked_past(tmp_path: Path):
    data = images.webp_with_icc(images.large_icc_profile(70_000), 640, 480)
    assert data.index(b"VP8 ") > 64 * 1024  # the image chunk starts beyond a 64 KiB window
    header = webp.read_header(_file(tmp_path, data))
    assert (header.width, header.height, header.lossless) == (640, 480, False)


def test_a_webp_with_a_flood_of_chunks_before_its_image_is_too_complex(tmp_path: Path):
    assert webp.read_header(_file(tmp_path, images.webp_chunk_flood(900))).width == 16
    with pytest.raises(Rejected) as refused:
        webp.read_header(_file(tmp_path, images.webp_chunk_flood(2000)))
    assert refused.value.code is RejectionCode.TOO_COMPLEX
