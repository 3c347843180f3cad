"""The image stage on real files made here with Pillow (and pillow-heif), checked by decoding the output."""

from __future__ import annotations

import hashlib
import io
import struct
import subprocess
import sys
import textwrap
import time
import warnings
import zlib
from pathlib import Path

import pillow_heif
import pytest
from PIL import ExifTags, Image, ImageCms, ImageFile, ImageOps

from app.domain.rejections import Rejected, RejectionCode
from workers.stages.image import ImageRules, ProcessedImage, process_image

REPO = Path(__file__).resolve().parents[2]
RED, BLUE, WHITE = (255, 0, 0), (0, 0, 255), (255, 255, 255)
SRGB = ImageCms.createProfile("sRGB")


# --- helpers ----------------------------------------------------------------------------------------------


def save(path: Path, img: Image.Image, fmt: str, **params: object) -> Path:
    img.save(path, fmt, **params)
    return path


def decode(result: ProcessedImage) -> Image.Image:
    out = Image.open(io.BytesIO(result.data), formats=["JPEG"])
    out.load()
    return out


def close_to(pixel: tuple[int, ...], expected: tuple[int, ...], tolerance: int = 12) -> bool:
    return all(abs(a - b) <= tolerance for a, b in zip(pixel, expected, strict=True))


def halves(size: tuple[int, int], left: tuple[int, int, int], right: tuple[int, int, int]) -> Image.Image:
    img = Image.new("RGB", size, right)
    img.paste(left, (0, 0, size[0] // 2, size[1]))
    return img


def noisy(size: tuple[int, int]) -> Image.Image:
    """Texture, so that a JPEG of it has real scan data to truncate."""
    return Image.merge("RGB", [Image.effect_noise(size, 60) for _ in range(3)])


def reject_code(path: Path, mime: str, rules: ImageRules | None = None) -> RejectionCode:
    with pytest.raises(Rejected) as caught:
        process_image(path, mime, rules or ImageRules())
    return caught.value.code


def bomb_png(path: Path, side: int) -> Path:
    """A real single-colour PNG of side x side pixels in a few hundred KB: 1-bit palette, zlib'd zero rows."""

    def chunk(kind: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body))

    row = b"\x00" * (1 + (side + 7) // 8)  # filter byte + packed bits
    packer, rows_per_call = zlib.compressobj(9), 1000
    idat = b"".join(
        packer.compress(row * min(rows_per_call, side - y)) for y in range(0, side, rows_per_call)
    )
    ihdr = struct.pack(">IIBBBBB", side, side, 1, 3, 0, 0, 0)  # 1-bit, palette
    png = b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"PLTE", bytes(RED))
    path.write_bytes(png + chunk(b"IDAT", idat + packer.flush()) + chunk(b"IEND", b""))
    return path


@pytest.fixture(scope="module")
def bombs(tmp_path_factory: pytest.TempPathFactory) -> dict[int, Path]:
    folder = tmp_path_factory.mktemp("bombs")
    return {side: bomb_png(folder / f"{side}.png", side) for side in (12_000, 30_000)}


# --- the main path: a rotated phone photo with GPS ----------------------------------------------------------


@pytest.fixture(scope="module")
def phone_photo(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4000x3000, stored sideways (EXIF Orientation 6), red on the stored left, with GPS, XMP, a comment."""
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6
    exif[ExifTags.Base.Make] = "TestPhone"
    gps = exif.get_ifd(ExifTags.IFD.GPSInfo)
    gps[ExifTags.GPS.GPSLatitudeRef] = "N"
    gps[ExifTags.GPS.GPSLatitude] = (52.0, 31.0, 12.0)
    path = tmp_path_factory.mktemp("photo") / "phone.jpg"
    save(path, halves((4000, 3000), RED, BLUE), "JPEG", quality=92, exif=exif, comment=b"secret", xmp=b"<x/>")
    with Image.open(path) as src:  # the input really carries what must be stripped
        assert src.getexif().get_ifd(ExifTags.IFD.GPSInfo)
        assert "comment" in src.info and "xmp" in src.info
    return path


def test_phone_photo_is_upright_small_and_stripped(phone_photo: Path) -> None:
    result = process_image(phone_photo, "image/jpeg")
    out = decode(result)

    assert (result.width, result.height) == out.size == (900, 1200)  # portrait, fits 1200
    assert out.mode == "RGB" and result.content_type == "image/jpeg"
    # Orientation 6 means "rotate 90 degrees clockwise to view": the stored left edge becomes the top.
    assert close_to(out.getpixel((450, 10)), RED) and close_to(out.getpixel((450, 1190)), BLUE)
    assert not out.getexif() and not out.getexif().get_ifd(ExifTags.IFD.GPSInfo)
    assert not {"exif", "xmp", "comment", "icc_profile", "dpi"} & set(out.info)
    assert b"Exif" not in result.data and b"secret" not in result.data and b"TestPhone" not in result.data
    assert out.info.get("progressive") and out.info.get("progression")


def test_output_is_quality_85(phone_photo: Path) -> None:
    reference = io.BytesIO()
    Image.new("RGB", (16, 16)).save(reference, "JPEG", quality=85)
    out = decode(process_image(phone_photo, "image/jpeg"))
    assert out.quantization == Image.open(reference).quantization  # type: ignore[attr-defined]


def test_sha256_is_of_the_data(phone_photo: Path) -> None:
    result = process_image(phone_photo, "image/jpeg")
    assert result.sha256 == hashlib.sha256(result.data).hexdigest()


@pytest.mark.parametrize("orientation", range(1, 9))
def test_every_exif_orientation_matches_exif_transpose(tmp_path: Path, orientation: int) -> None:
    quadrants = Image.new("RGB", (80, 60), WHITE)
    for (x, y), colour in zip([(0, 0), (40, 0), (0, 30)], [RED, BLUE, (0, 160, 0)], strict=True):
        quadrants.paste(colour, (x, y, x + 40, y + 30))
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = orientation
    path = save(tmp_path / "o.jpg", quadrants, "JPEG", quality=95, exif=exif)

    out = decode(process_image(path, "image/jpeg"))
    with Image.open(path) as src:
        expected = ImageOps.exif_transpose(src)
    assert out.size == expected.size
    for x, y in [(10, 10), (out.width - 10, 10), (10, out.height - 10), (out.width - 10, out.height - 10)]:
        assert close_to(out.getpixel((x, y)), expected.getpixel((x, y)))


# --- sizes --------------------------------------------------------------------------------------------------


def test_small_image_is_not_upscaled(tmp_path: Path) -> None:
    path = save(tmp_path / "small.jpg", noisy((300, 200)), "JPEG")
    result = process_image(path, "image/jpeg")
    assert (result.width, result.height) == decode(result).size == (300, 200)


@pytest.mark.parametrize(("size", "expected"), [((2000, 500), (1200, 300)), ((1300, 1301), (1199, 1200))])
def test_fits_the_box_keeping_aspect(
    tmp_path: Path, size: tuple[int, int], expected: tuple[int, int]
) -> None:
    path = save(tmp_path / "wide.png", noisy(size), "PNG")
    assert decode(process_image(path, "image/png")).size == expected


# --- refusals -----------------------------------------------------------------------------------------------


@pytest.mark.parametrize("side", [12_000, 30_000])
def test_pixel_bombs_are_refused_from_the_header(
    bombs: dict[int, Path], side: int, monkeypatch: pytest.MonkeyPatch
) -> None:
    def no_decoding(self: ImageFile.ImageFile) -> None:
        raise AssertionError("the pixels were decoded")

    monkeypatch.setattr(ImageFile.ImageFile, "load", no_decoding)
    started = time.perf_counter()
    with warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)  # ours fires first, no warning leaks
        assert reject_code(bombs[side], "image/png") is RejectionCode.IMAGE_TOO_LARGE
    assert time.perf_counter() - started < 1.0


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_pixel_bombs_cost_little_memory(bombs: dict[int, Path]) -> None:
    """In a fresh process (ru_maxrss would inherit pytest's peak): the peak RSS barely moves."""
    script = textwrap.dedent(
        f"""
        from pathlib import Path
        from app.domain.rejections import Rejected
        from workers.stages.image import process_image

        def peak_kb():
            return next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:"))

        before = peak_kb()
        for path in {[str(p) for p in bombs.values()]!r}:
            try:
                process_image(Path(path), "image/png")
            except Rejected as exc:
                assert exc.code == "image_too_large", exc
        print(peak_kb() - before)
        """
    )
    run = subprocess.run([sys.executable, "-c", script], cwd=REPO, capture_output=True, text=True, timeout=60)
    assert run.returncode == 0, run.stderr
    assert int(run.stdout) < 10 * 1024  # KiB; decoding even the smaller one would take ~144 MB


def test_pixel_limit_is_configurable(tmp_path: Path) -> None:
    path = save(tmp_path / "p.png", noisy((200, 100)), "PNG")
    assert reject_code(path, "image/png", ImageRules(max_pixels=19_999)) is RejectionCode.IMAGE_TOO_LARGE
    assert process_image(path, "image/png", ImageRules(max_pixels=20_000)).width == 200


def test_truncated_jpeg_is_corrupt(tmp_path: Path) -> None:
    whole = io.BytesIO()
    noisy((800, 600)).save(whole, "JPEG", quality=90)
    path = tmp_path / "cut.jpg"
    path.write_bytes(whole.getvalue()[: len(whole.getvalue()) // 2])
    assert not ImageFile.LOAD_TRUNCATED_IMAGES
    assert reject_code(path, "image/jpeg") is RejectionCode.CORRUPT


def test_html_declared_as_jpeg_is_corrupt(tmp_path: Path) -> None:
    """Bytes the allowed decoder cannot identify are CORRUPT (the sniffer had said JPEG; it is not one)."""
    path = tmp_path / "page.jpg"
    path.write_bytes(b"<!DOCTYPE html><html><body><script>alert(1)</script></body></html>")
    with pytest.raises(Rejected) as caught:
        process_image(path, "image/jpeg")
    assert caught.value.code is RejectionCode.CORRUPT
    assert str(tmp_path) not in caught.value.message  # the message reaches users: no worker paths


def test_only_the_decoder_for_the_sniffed_type_is_tried(tmp_path: Path) -> None:
    path = save(tmp_path / "really.png", noisy((64, 64)), "PNG")
    assert reject_code(path, "image/jpeg") is RejectionCode.CORRUPT
    assert reject_code(path, "image/gif") is RejectionCode.TYPE_MISMATCH


def test_missing_source_is_not_a_verdict_on_the_content(tmp_path: Path) -> None:
    with pytest.raises(FileNotFoundError):
        process_image(tmp_path / "gone.jpg", "image/jpeg")


# --- modes and formats --------------------------------------------------------------------------------------


@pytest.mark.parametrize("mode", ["RGBA", "LA", "P"])
def test_transparency_becomes_white(tmp_path: Path, mode: str) -> None:
    rgba = Image.new("RGBA", (200, 100), (0, 0, 0, 0))  # transparent black: must not show as black
    rgba.paste((200, 30, 30, 255), (0, 0, 100, 100))
    img = rgba.convert(mode) if mode != "P" else rgba.quantize(colors=4, method=Image.Quantize.FASTOCTREE)
    if mode == "P":  # the transparent pixels' palette index is the tRNS entry
        img.info["transparency"] = img.getpixel((150, 50))
    path = save(tmp_path / f"{mode}.png", img, "PNG")

    out = decode(process_image(path, "image/png"))
    assert out.mode == "RGB"
    assert close_to(out.getpixel((170, 50)), WHITE, tolerance=3)
    assert not close_to(out.getpixel((30, 50)), WHITE, tolerance=60)


@pytest.mark.parametrize(("mode", "colour"), [("CMYK", (0, 255, 255, 0)), ("L", 90)])
def test_cmyk_and_grey_jpegs_come_out_rgb(tmp_path: Path, mode: str, colour: tuple | int) -> None:
    path = save(tmp_path / "other.jpg", Image.new(mode, (2000, 1000), colour), "JPEG")
    out = decode(process_image(path, "image/jpeg"))
    expected = Image.new(mode, (1, 1), colour).convert("RGB").getpixel((0, 0))
    assert out.mode == "RGB" and out.size == (1200, 600) and close_to(out.getpixel((600, 300)), expected)


def test_rgb_coded_jpeg_is_not_taken_for_ycbcr(tmp_path: Path) -> None:
    """A JPEG whose components are R, G, B (no JFIF, ids 'R' 'G' 'B'): libjpeg cannot hand it over as
    YCbCr, so the fast path must not be tried (it would fail and wrongly refuse the file as corrupt)."""
    plain = io.BytesIO()
    Image.new("RGB", (64, 48), (200, 30, 30)).save(plain, "JPEG", quality=95)
    data = bytearray(plain.getvalue())
    del data[2 : 4 + int.from_bytes(data[4:6], "big")]  # the JFIF APP0 segment
    sof, sos = data.index(b"\xff\xc0") + 10, data.index(b"\xff\xda") + 5
    for k, component_id in enumerate(b"RGB"):
        data[sof + 3 * k] = data[sos + 2 * k] = component_id
    path = tmp_path / "rgb-coded.jpg"
    path.write_bytes(bytes(data))
    with Image.open(path) as src:
        expected = src.convert("RGB").getpixel((32, 24))  # Pillow itself reads it fine

    out = decode(process_image(path, "image/jpeg"))
    assert out.size == (64, 48) and close_to(out.getpixel((32, 24)), expected, tolerance=4)


def test_threads_change_nothing_but_time(phone_photo: Path) -> None:
    parallel = process_image(phone_photo, "image/jpeg", ImageRules(parallel=True))
    assert parallel == process_image(phone_photo, "image/jpeg", ImageRules(parallel=False))


def test_16_bit_png_is_scaled_not_clipped(tmp_path: Path) -> None:
    path = save(tmp_path / "deep.png", Image.new("I;16", (300, 200), 32_768), "PNG")
    with Image.open(path) as src:
        assert src.mode == "I;16"
    out = decode(process_image(path, "image/png"))
    assert out.mode == "RGB" and close_to(out.getpixel((150, 100)), (128, 128, 128), tolerance=3)


def test_webp(tmp_path: Path) -> None:
    path = save(tmp_path / "a.webp", halves((1600, 1000), RED, BLUE), "WEBP", quality=90)
    out = decode(process_image(path, "image/webp"))
    assert out.size == (1200, 750) and close_to(out.getpixel((100, 375)), RED)


@pytest.mark.parametrize(("fmt", "mime"), [("WEBP", "image/webp"), ("PNG", "image/png")])
def test_animation_keeps_only_its_first_frame(tmp_path: Path, fmt: str, mime: str) -> None:
    frames = [Image.new("RGB", (320, 240), colour) for colour in (RED, BLUE, (0, 160, 0))]
    path = save(tmp_path / f"anim.{fmt.lower()}", frames[0], fmt, save_all=True, append_images=frames[1:])
    with Image.open(path) as src:
        assert src.n_frames == 3
    out = decode(process_image(path, mime))
    assert out.size == (320, 240) and close_to(out.getpixel((160, 120)), RED)


def test_heic_upright_and_stripped(tmp_path: Path) -> None:
    assert pillow_heif.libheif_info()["HEIF"], "pillow-heif's wheel should carry an HEVC encoder"
    pillow_heif.register_heif_opener()  # for saving; the stage registered it for opening
    exif = Image.Exif()
    exif[ExifTags.Base.Orientation] = 6  # given as bytes, pillow-heif stores it as an irot transform
    path = save(tmp_path / "a.heic", halves((1600, 1200), RED, BLUE), "HEIF", quality=90, exif=exif.tobytes())
    with Image.open(path) as src:  # HEIF's rotation is applied by libheif; EXIF's must not apply again
        assert src.size == (1200, 1600) and src.info["original_orientation"] == 6
    result = process_image(path, "image/heic")
    out = decode(result)
    assert out.size == (900, 1200) and out.mode == "RGB" and not out.getexif()
    assert close_to(out.getpixel((450, 10)), RED, tolerance=20)  # rotated once, not twice
    assert close_to(out.getpixel((450, 1190)), BLUE, tolerance=20)
    assert result.sha256 == hashlib.sha256(result.data).hexdigest()


# --- colour profiles ----------------------------------------------------------------------------------------


def test_srgb_profile_is_dropped_and_colours_kept(tmp_path: Path) -> None:
    srgb = ImageCms.ImageCmsProfile(ImageCms.createProfile("sRGB")).tobytes()
    path = save(tmp_path / "srgb.jpg", Image.new("RGB", (64, 64), (40, 180, 90)), "JPEG", icc_profile=srgb)
    out = decode(process_image(path, "image/jpeg"))
    assert "icc_profile" not in out.info and close_to(out.getpixel((32, 32)), (40, 180, 90), tolerance=4)


@pytest.mark.parametrize(
    ("profile", "fmt", "colour"),
    [("p3", "JPEG", (30, 200, 60)), ("p3", "PNG", (30, 200, 60)), ("cmyk", "JPEG", (0, 200, 200, 0))],
)
def test_embedded_profile_is_converted_to_srgb(tmp_path: Path, profile: str, fmt: str, colour: tuple) -> None:
    """A phone's Display P3 photo, a print shop's CMYK file: stored untagged, already rendered to sRGB."""
    import pyvips  # only as a source of real Display P3 and CMYK profiles (a test dependency)

    icc = (
        pyvips.Image.black(1, 1, bands=3).icc_transform(profile, input_profile="srgb").get("icc-profile-data")
    )
    mode = "CMYK" if len(colour) == 4 else "RGB"
    path = save(tmp_path / "tagged.img", Image.new(mode, (64, 64), colour), fmt, icc_profile=icc, quality=95)
    with Image.open(path) as src:
        stored = src.getpixel((32, 32))  # as decoded: a JPEG shifts saturated colours a little
    as_srgb = ImageCms.profileToProfile(
        Image.new(mode, (1, 1), stored), ImageCms.ImageCmsProfile(io.BytesIO(icc)), SRGB, outputMode="RGB"
    ).getpixel((0, 0))

    out = decode(process_image(path, "image/jpeg" if fmt == "JPEG" else "image/png"))
    assert "icc_profile" not in out.info
    assert not close_to(
        as_srgb, Image.new(mode, (1, 1), stored).convert("RGB").getpixel((0, 0)), tolerance=10
    )
    assert close_to(out.getpixel((32, 32)), as_srgb, tolerance=4)


# --- limits quoted, types refused, memory of the worst admitted images ------------------------------------


@pytest.mark.parametrize("side", [12_000, 30_000])
def test_image_too_large_quotes_the_services_limit_not_pillows(bombs: dict[int, Path], side: int) -> None:
    """30,000² is past Pillow's own bomb limit too: its message (178,956,970 pixels) must not leak."""
    rules = ImageRules(max_pixels=50_000_000)
    with pytest.raises(Rejected) as caught:
        process_image(bombs[side], "image/png", rules)
    assert caught.value.code is RejectionCode.IMAGE_TOO_LARGE
    assert "50,000,000" in caught.value.message
    assert "178,956,970" not in caught.value.message


def test_a_gif_declared_as_png_is_a_type_mismatch(tmp_path: Path) -> None:
    from workers.stages.sniff import sniff

    path = save(tmp_path / "moving.png", noisy((32, 32)).convert("P"), "GIF")
    with pytest.raises(Rejected) as caught:
        sniff(path, "image/png")
    assert caught.value.code is RejectionCode.TYPE_MISMATCH


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads VmHWM from /proc")
def test_the_worst_admitted_rgba_images_stay_under_300_mb(tmp_path: Path) -> None:
    """A 50 MP 16-bit RGBA PNG, a 50 MP lossy RGBA WebP and a lossless one near the largest the default
    budget admits (~33 MP at 8 bytes a pixel), each in a
    fresh process (ru_maxrss would inherit pytest's peak), with the worker's default memory budget."""
    from tests import images

    files = {
        tmp_path / "rgba16.png": ("image/png", images.rgba16_png(7071, 7071)),
        tmp_path / "rgba.webp": ("image/webp", images.rgba_image(7071, 7071, "WEBP", quality=80)),
        tmp_path / "lossless.webp": ("image/webp", images.rgba_image(5600, 5600, "WEBP", lossless=True)),
    }
    for path, (_, data) in files.items():
        path.write_bytes(data)
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from app.config import Settings
        from workers.stages.image import ImageRules, process_image

        budget = Settings.model_fields["image_memory_bytes"].default
        result = process_image(Path(sys.argv[1]), sys.argv[2], ImageRules(memory_bytes=budget))
        assert (result.width, result.height) == (1200, 1200), (result.width, result.height)
        print(next(int(l.split()[1]) for l in open("/proc/self/status") if l.startswith("VmHWM:")) // 1024)
        """
    )
    for path, (mime, _) in files.items():
        run = subprocess.run(
            [sys.executable, "-c", script, str(path), mime],
            cwd=REPO,
            capture_output=True,
            text=True,
            timeout=120,
        )
        assert run.returncode == 0, run.stderr
        assert int(run.stdout) <= 300, f"{path.name}: peak RSS {run.stdout.strip()} MB"


def test_a_worker_that_already_used_libvips_still_decodes_webp_in_its_children(tmp_path: Path) -> None:
    """libvips is not fork-safe: a child of a process that used it must not hang (it falls back to
    Pillow). In a fresh interpreter, so this test process's own imports do not matter."""
    path = save(tmp_path / "small.webp", noisy((320, 240)), "WEBP", quality=80)
    script = textwrap.dedent(
        """
        import sys
        from pathlib import Path
        from workers.sandbox import ProcessLimits, run_limited
        from workers.stages.image import ImageRules, process_image, write_image

        source, output = Path(sys.argv[1]), Path(sys.argv[1]).with_name("out.jpg")
        process_image(source, "image/webp")  # libvips loaded and used here, in the parent
        limits = ProcessLimits(cpu_seconds=10, memory_bytes=256 << 20, wall_seconds=30)
        print(run_limited(write_image, source, "image/webp", ImageRules(), output, limits=limits))
        """
    )
    run = subprocess.run(
        [sys.executable, "-c", script, str(path)], cwd=REPO, capture_output=True, text=True, timeout=90
    )
    assert run.returncode == 0, run.stderr
    assert "'width': 320" in run.stdout and "'height': 240" in run.stdout


def test_a_webp_photo_with_an_icc_profile_over_64_kib_is_processed(tmp_path: Path) -> None:
    """A calibrated camera profile can be larger than the window a header reader once read: not corrupt."""
    from tests import images

    path = tmp_path / "photo.webp"
    path.write_bytes(images.webp_with_icc(images.large_icc_profile(70_000), 1600, 1200))
    result = process_image(path, "image/webp")
    assert (result.width, result.height) == (1200, 900)


def test_a_heif_that_libheif_cannot_decode_is_corrupt_by_the_table(tmp_path: Path) -> None:
    """pillow-heif raises RuntimeError for bytes libheif refuses: the image table's `corrupt`."""
    from tests import images

    data = images.rgba_image(64, 64, "HEIF", quality=50)
    path = tmp_path / "cut.heic"
    path.write_bytes(data[: len(data) - 200])
    assert reject_code(path, "image/heic") is RejectionCode.CORRUPT
