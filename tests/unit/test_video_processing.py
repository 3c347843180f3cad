"""The video processor on real (tiny) videos: what it refuses, and what its outputs are when opened again."""

from __future__ import annotations

import itertools
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


def _pictures(path: Path) -> list[list[bytes]]:
    """Each video packet's NAL units but SEI (which the main file drops): the coded pictures themselves."""

    def picture_units(packet: bytes) -> list[bytes]:
        return [u for u in videos.nal_units(packet) if u[0] & 0x1F != 6]

    return [picture_units(packet) for packet in _packets(path)]


def _timestamps(path: Path) -> list[tuple[int, int]]:
    with av.open(str(path)) as container:
        return [(p.pts, p.dts) for p in container.demux(video=0) if p.size]


def _frame_count(path: Path) -> int:
    with av.open(str(path)) as container:
        return sum(1 for _ in container.decode(video=0))


def _assert_muxable(path: Path) -> None:
    """Decode times strictly increasing, none after its presentation time: what the MP4 format requires."""
    times = _timestamps(path)
    assert all(pts >= dts for pts, dts in times), times
    assert all(a[1] < b[1] for a, b in itertools.pairwise(times)), times


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
    assert _pictures(main.path) == _pictures(source)  # copied, not re-encoded
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


# --- what real phones record ---------------------------------------------------------------------------------


@pytest.mark.parametrize("codec", ["libx265", "libx264"])
def test_an_iphone_clip_read_back_with_pts_before_dts_is_copied_with_valid_times(tmp_path: Path, codec: str):
    source = videos.reordered_short_clip(tmp_path / "hdr.mov", codec)
    assert any(pts < dts for pts, dts in _timestamps(source))  # what made the muxer raise "pts < dts"

    processed = _run(source, tmp_path)

    main = processed.main.path
    assert processed.codecs == ("hevc+aac" if codec == "libx265" else "h264+aac")  # still copied
    _assert_muxable(main)
    assert _frame_count(main) == 5
    assert [pts for pts, _ in _timestamps(main)] == [pts for pts, _ in _timestamps(source)]  # shown as before


def test_a_first_sample_of_duration_zero_is_copied(tmp_path: Path):
    source = videos.zero_first_sample_duration(tmp_path / "zero.mp4")
    dts = [dts for _, dts in _timestamps(source)]
    assert dts[0] == dts[1]  # two packets decoded at one time

    processed = _run(source, tmp_path)

    assert processed.codecs == "h264+aac"
    _assert_muxable(processed.main.path)
    assert _frame_count(processed.main.path) == 30


def test_packets_no_shift_can_mend_are_encoded_instead_of_copied(tmp_path: Path):
    source = videos.late_negative_offset(tmp_path / "late.mov")

    processed = _run(source, tmp_path)

    assert processed.codecs == "h264"  # the main file encoded from the decoded frames
    assert (processed.main.width, processed.main.height) == (320, 240)
    _assert_muxable(processed.main.path)
    assert _frame_count(processed.main.path) == 60
    assert _is_upright(_first_frame(processed.main.path).to_image())


def test_mp3_changing_rate_and_channels_midway_is_resampled_to_aac(tmp_path: Path):
    source = videos.mp3_changing_format(tmp_path / "concat.mov")

    processed = _run(source, tmp_path)

    assert processed.codecs == "h264+aac"
    with av.open(str(processed.main.path)) as container:
        sound = container.streams.audio[0]
        frames = list(container.decode(sound))
    assert {(f.sample_rate, f.layout.name) for f in frames} == {(44_100, "mono")}  # the first format
    assert sum(f.samples for f in frames) / 44_100 == pytest.approx(1.0, abs=0.1)  # nothing lost or doubled


def test_a_codec_ffmpeg_does_not_know_is_refused_by_its_name(tmp_path: Path):
    source = videos.unknown_codec(videos.clip(tmp_path / "clip.mp4"), tmp_path / "dolby-av1.mp4")
    with pytest.raises(Rejected) as refused:
        _run(source, tmp_path)
    assert refused.value.code is RejectionCode.UNSUPPORTED_CODEC
    assert "dav1" in refused.value.message


@pytest.mark.parametrize("codec", ["libx264", "libx265"])
def test_a_location_in_sei_user_data_is_in_no_stored_file(tmp_path: Path, codec: str):
    plain = videos.clip(tmp_path / "plain.mp4", codec=codec, size=(1600, 900), seconds=0.5, audio="aac")
    source = videos.with_user_data_sei(plain, tmp_path / "sei.mp4", videos.LOCATION)
    assert videos.LOCATION.encode() in source.read_bytes() and videos.sei_units(source)

    processed = _run(source, tmp_path)

    stored = [processed.main.path, processed.variants["720p"].path]
    for path in stored:
        data = path.read_bytes()
        assert videos.LOCATION.encode() not in data and videos.LOCATION[:8].encode() not in data
        assert b"x264 - core" not in data and b"x265 (build" not in data  # the encoders' own user data
        assert videos.sei_units(path) == []
    assert _frame_count(processed.main.path) == _frame_count(source)  # still every picture


@pytest.mark.parametrize(
    ("prefix", "suffix"),
    [(b"", bytes(4)), (b"\x00\x00\x00\x09\x06", b"")],
    ids=["empty-last-unit", "length-past-the-end"],
)
def test_a_nal_unit_of_a_bad_length_is_judged_not_a_crash(tmp_path: Path, prefix: bytes, suffix: bytes):
    # What the user-data filter reads first; the corpus' sample_with_invalid_nalu.mp4 (an empty last unit)
    # crashed it with an IndexError.
    clip = videos.clip(tmp_path / "clip.mp4")
    source = videos.with_prefix(clip, tmp_path / "bad.mp4", prefix, suffix)
    try:
        processed = _run(source, tmp_path)
    except Rejected as refused:
        assert refused.code is RejectionCode.CORRUPT
    else:
        assert _frame_count(processed.main.path) == 45


@pytest.mark.parametrize(("transfer", "signal"), [(18, 0.75), (16, 0.58)], ids=["hlg", "pq"])
def test_the_720p_of_an_hdr_video_is_bt709_sdr(tmp_path: Path, transfer: int, signal: float):
    # HDR reference white (HLG 75 %, PQ 58 %: 203 nits) should look white on an SDR phone, not grey.
    source = videos.hdr_clip(tmp_path / "hdr.mp4", transfer, signal)

    processed = _run(source, tmp_path)

    frame = _first_frame(processed.variants["720p"].path)
    context = (frame.color_primaries, frame.color_trc, frame.colorspace)
    assert context == (1, 1, 1) and frame.format.name == "yuv420p"  # BT.709, 8-bit
    grey = frame.to_image().getpixel((10, 10))[0]
    naive = _first_frame(source).to_image().getpixel((10, 10))[0]
    assert 220 <= grey <= 240, grey  # ~0.9 of SDR white (video_tonemap: reference white at 80 % linear)
    assert naive < 200  # what a player without tone-mapping shows
    with Image.open(processed.variants["poster"].path) as poster:
        assert 220 <= poster.convert("L").getpixel((10, 10)) <= 240  # the poster too
    assert _first_frame(processed.main.path).color_trc == transfer  # the main file is still HDR, copied


def test_frames_crowded_into_a_short_header_duration_count_as_time(tmp_path: Path):
    # 600 frames in 0.6 s of timestamps, which the headers also claim: more than any camera's 240 a second,
    # so the pass counts them as 2.5 s, over a 1 s limit (the probe, on the header's word, let it through).
    source = videos.clip(tmp_path / "crowded.mp4", size=(64, 64), seconds=0.6, fps=1000)
    with pytest.raises(Rejected) as refused:
        _run(source, tmp_path, VideoRules(max_duration_seconds=1))
    assert refused.value.code is RejectionCode.VIDEO_TOO_LONG
    assert "packets" in refused.value.message


def test_a_video_costing_more_than_its_budget_is_too_complex_before_decoding(tmp_path: Path):
    # 45 frames of 320x240: 45 x 76,800 / 30 = 115,200 pixel-seconds.
    source = videos.clip(tmp_path / "clip.mp4")
    with pytest.raises(Rejected) as refused:
        _run(source, tmp_path, VideoRules(max_pixel_seconds=100_000))
    assert refused.value.code is RejectionCode.TOO_COMPLEX
    assert "frames" in refused.value.message and "cost" in refused.value.message
    assert _run(source, tmp_path, VideoRules(max_pixel_seconds=120_000)).duration_seconds == pytest.approx(
        1.5
    )


def test_every_video_kind_declares_a_budget():
    for kind in KINDS.values():
        if kind.content_types & {"video/mp4"}:
            assert kind.max_video_pixel_seconds, kind.name
    assert KINDS["workout_video"].max_video_pixel_seconds >= 1920 * 1080 * 10 * 60  # 10 min of 1080p30
