"""The video processor on real (tiny) videos: what it refuses, and what its outputs are when opened again."""

from __future__ import annotations

import tempfile
from fractions import Fraction
from pathlib import Path

import av
import pytest
from PIL import Image

from app.config import Settings
from app.domain.kinds import KINDS
from app.domain.rejections import Rejected, RejectionCode
from tests import videos
from workers.processing.outputs import Processed
from workers.processing.video import VideoRules, process, process_video

RULES = VideoRules()


def _run(source: Path, tmp_path: Path, rules: VideoRules = RULES) -> Processed:
    workdir = Path(tempfile.mkdtemp(dir=tmp_path))
    return Processed.from_json(process_video(source, workdir, rules), workdir)


def _refused(source: Path, tmp_path: Path, rules: VideoRules = RULES) -> RejectionCode:
    with pytest.raises(Rejected) as refused:
        _run(source, tmp_path, rules)
    return refused.value.code


def _streams(path: Path) -> dict[str, str]:
    """Codec name by stream type, e.g. {"video": "h264", "audio": "aac"}."""
    with av.open(str(path)) as container:
        return {stream.type: stream.codec_context.name for stream in container.streams}


def _packets(path: Path) -> list[bytes]:
    with av.open(str(path)) as container:
        return [bytes(p) for p in container.demux(video=0) if p.size]


def _first_frame(path: Path) -> av.VideoFrame:
    with av.open(str(path)) as container:
        return next(container.decode(video=0))


def _is_upright(picture: Image.Image) -> bool:
    """Red above, blue below (tests.videos.two_tone), allowing for compression."""
    rgb = picture.convert("RGB")
    top, bottom = (
        rgb.getpixel((rgb.width // 2, rgb.height // 8)),
        rgb.getpixel((rgb.width // 2, rgb.height * 7 // 8)),
    )
    return top[0] > 150 > top[2] and bottom[2] > 150 > bottom[0]


def _assert_faststart(path: Path) -> None:
    found = videos.boxes(path)
    assert found.index(b"moov") < found.index(b"mdat"), found


def test_small_h264_is_remuxed_and_loses_its_location(tmp_path: Path):
    source = videos.clip(tmp_path / "phone.mp4", audio="aac", metadata={"location": videos.LOCATION})
    assert b"loci" in source.read_bytes()  # the MP4 muxer's form of the location (3GPP)

    processed = _run(source, tmp_path)

    main = processed.main
    assert (main.path.name, main.content_type, main.extension, main.width, main.height) == (
        "video.mp4", "video/mp4", "mp4", 320, 240,
    )  # fmt: skip
    assert set(processed.variants) == {"poster"}  # H.264 at most 1280 px plays everywhere: no 720p
    assert processed.duration_seconds == pytest.approx(1.5, abs=0.1)
    assert _packets(main.path) == _packets(source)  # copied, not re-encoded
    assert _streams(main.path) == {"video": "h264", "audio": "aac"}
    _assert_faststart(main.path)
    data = main.path.read_bytes()
    assert b"loci" not in data and videos.LOCATION[:8].encode() not in data and b"Lavf" not in data
    with av.open(str(main.path)) as container:
        tags = {**container.metadata, **container.streams.video[0].metadata}
        assert not any("location" in key for key in tags), tags


def test_quicktime_location_atoms_are_dropped(tmp_path: Path):
    source = videos.clip(
        tmp_path / "iphone.mov",
        container="mov",
        audio="aac",
        metadata={"location": videos.LOCATION, videos.APPLE_LOCATION_KEY: videos.LOCATION},
        options={"movflags": "use_metadata_tags"},
    )
    assert b"\xa9xyz" in source.read_bytes() or videos.APPLE_LOCATION_KEY.encode() in source.read_bytes()
    assert videos.LOCATION.encode() in source.read_bytes()

    main = _run(source, tmp_path).main.path

    data = main.read_bytes()
    assert b"\xa9xyz" not in data and b"com.apple.quicktime" not in data
    assert videos.LOCATION.encode() not in data and videos.LOCATION[:8].encode() not in data
    with av.open(str(main)) as container:
        assert not any("location" in key for key in container.metadata), container.metadata


def test_hevc_gets_an_h264_720p_with_audio(tmp_path: Path):
    source = videos.clip(tmp_path / "hevc.mp4", codec="libx265", size=(640, 360), audio="aac")

    processed = process(source, "video/mp4", KINDS["workout_video"], Settings(), tmp_path)

    assert _streams(processed.main.path) == {"video": "hevc", "audio": "aac"}
    rendition = processed.variants["720p"]
    assert (rendition.path.name, rendition.width, rendition.height) == ("720p.mp4", 640, 360)
    assert _streams(rendition.path) == {"video": "h264", "audio": "aac"}
    _assert_faststart(rendition.path)
    frame = _first_frame(rendition.path)
    assert (frame.width, frame.height, frame.format.name) == (640, 360, "yuv420p")
    assert _is_upright(frame.to_image())


def test_large_h264_gets_a_720p_and_no_audio_stays_no_audio(tmp_path: Path):
    source = videos.clip(tmp_path / "big.mp4", size=(1600, 900), seconds=0.5)

    processed = _run(source, tmp_path)

    assert (processed.main.width, processed.main.height) == (1600, 900)
    assert _streams(processed.main.path) == {"video": "h264"}
    rendition = processed.variants["720p"]
    assert (rendition.width, rendition.height) == (1280, 720)
    assert _streams(rendition.path) == {"video": "h264"}
    poster = processed.variants["poster"]
    with Image.open(poster.path) as picture:
        assert (
            (picture.format, picture.size) == ("JPEG", (1200, 675)) == ("JPEG", (poster.width, poster.height))
        )
        assert not picture.info.get("exif") and _is_upright(picture)


def test_non_aac_sound_is_re_encoded_to_aac(tmp_path: Path):
    source = videos.clip(tmp_path / "camera.mov", container="mov", codec="libx265", audio="pcm_s16le")

    processed = _run(source, tmp_path)

    assert _streams(processed.main.path) == {"video": "hevc", "audio": "aac"}
    assert _streams(processed.variants["720p"].path) == {"video": "h264", "audio": "aac"}


@pytest.mark.parametrize("rotation", [90, -90])
def test_a_portrait_phone_video_is_upright_everywhere(tmp_path: Path, rotation: int):
    # Stored landscape with a display matrix, as phones record portrait video: the upright picture turned the
    # other way. HEVC, so that a 720p rendition is made too.
    upright = videos.two_tone(240, 320)
    stored = upright.transpose(Image.Transpose.ROTATE_270 if rotation == 90 else Image.Transpose.ROTATE_90)
    source = videos.clip(
        tmp_path / "portrait.mp4", codec="libx265", picture=stored, rotation=rotation, audio="aac"
    )

    processed = _run(source, tmp_path)

    assert (processed.main.width, processed.main.height) == (240, 320)
    main_frame = _first_frame(processed.main.path)
    assert (main_frame.width, main_frame.height) == (320, 240)  # copied: the display matrix turns it
    assert main_frame.rotation % 360 == rotation % 360
    poster = processed.variants["poster"]
    with Image.open(poster.path) as picture:
        assert picture.size == (240, 320) == (poster.width, poster.height)
        assert _is_upright(picture)
    rendition = processed.variants["720p"]
    frame = _first_frame(rendition.path)
    assert (rendition.width, rendition.height) == (240, 320) == (frame.width, frame.height)
    assert frame.rotation == 0 and _is_upright(frame.to_image())


# --- refusals ------------------------------------------------------------------------------------------------


def test_jpeg_bytes_are_a_type_mismatch(tmp_path: Path):
    assert _refused(videos.jpeg(tmp_path / "photo.mp4"), tmp_path) is RejectionCode.TYPE_MISMATCH


def test_matroska_is_a_type_mismatch(tmp_path: Path):
    source = videos.clip(tmp_path / "clip.mkv", container="matroska")
    assert _refused(source, tmp_path) is RejectionCode.TYPE_MISMATCH


def test_mpeg4_part_2_is_an_unsupported_codec(tmp_path: Path):
    source = videos.clip(tmp_path / "old.mp4", codec="mpeg4")
    assert _refused(source, tmp_path) is RejectionCode.UNSUPPORTED_CODEC


def test_hevc_is_refused_where_only_h264_is_allowed(tmp_path: Path):
    source = videos.clip(tmp_path / "hevc.mp4", codec="libx265", seconds=0.2)
    rules = VideoRules(allowed_codecs=frozenset({"h264"}))
    assert _refused(source, tmp_path, rules) is RejectionCode.UNSUPPORTED_CODEC


def test_audio_only_has_no_video_stream(tmp_path: Path):
    assert _refused(videos.audio_only(tmp_path / "memo.mp4"), tmp_path) is RejectionCode.NO_VIDEO_STREAM


@pytest.mark.parametrize("faststart", [True, False], ids=["moov-first", "moov-last"])
def test_a_truncated_upload_is_corrupt(tmp_path: Path, faststart: bool):
    options = {"movflags": "+faststart"} if faststart else {}
    whole = videos.clip(tmp_path / "whole.mp4", audio="aac", seconds=3, options=options)
    source = videos.truncated(whole, tmp_path / "cut.mp4")
    assert _refused(source, tmp_path) is RejectionCode.CORRUPT


def test_eleven_minutes_are_too_long(tmp_path: Path):
    # 64x64 at one frame every 10 s: 66 frames, made in milliseconds, refused from the headers.
    source = videos.clip(tmp_path / "long.mp4", size=(64, 64), seconds=660, fps=Fraction(1, 10))
    assert _refused(source, tmp_path) is RejectionCode.VIDEO_TOO_LONG
    # The kind's limit applies: an exercise demo may be 5 minutes.
    short = videos.clip(tmp_path / "short.mp4", size=(64, 64), seconds=400, fps=Fraction(1, 10))
    assert _run(short, tmp_path).duration_seconds == pytest.approx(400, abs=10)
    with pytest.raises(Rejected) as refused:
        process(short, "video/mp4", KINDS["exercise_demo"], Settings(), tmp_path)
    assert refused.value.code is RejectionCode.VIDEO_TOO_LONG


@pytest.mark.parametrize("size", [(4000, 64), (64, 4000), (2400, 2400)])
def test_frames_over_4k_are_too_large(tmp_path: Path, size: tuple[int, int]):
    source = videos.clip(tmp_path / "wide.mp4", size=size, seconds=0.1)
    assert _refused(source, tmp_path) is RejectionCode.VIDEO_TOO_LARGE


@pytest.mark.parametrize("size", [(3840, 2160), (2160, 3840)])
def test_4k_uhd_passes_in_both_orientations(tmp_path: Path, size: tuple[int, int]):
    # H.264 codes 2160 rows as 2176 (whole macroblocks): the decoder's own pixel cap must leave room for that.
    processed = _run(videos.clip(tmp_path / "uhd.mp4", size=size, seconds=0.1), tmp_path)
    assert (processed.main.width, processed.main.height) == size
    rendition = processed.variants["720p"]
    assert max(rendition.width, rendition.height) == 1280


def test_a_cpu_limit_breach_is_too_complex(tmp_path: Path):
    # 1080p H.264 needs a 720p rendition: decode, scale and x264 take well over the one second allowed.
    source = videos.clip(tmp_path / "heavy.mp4", size=(1920, 1080), seconds=8)
    with pytest.raises(Rejected) as refused:
        process(source, "video/mp4", KINDS["workout_video"], Settings(video_cpu_seconds=1), tmp_path)
    assert refused.value.code is RejectionCode.TOO_COMPLEX
