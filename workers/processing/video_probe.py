"""The video probe: what an upload's container says about it, checked before a single frame is decoded.

Only FFmpeg's MP4/QuickTime demuxer may read the bytes (never format probing, which would hand a hostile
file to whichever of FFmpeg's ~300 demuxers claims it), and only after the first box type shows an
MP4/QuickTime file at all. The demuxer reads the headers and the whole sample table; the checks below use
nothing else, so a file is refused in milliseconds whatever its size. What headers can hide (a frame larger
than its sample description says, packets beyond the declared duration) is checked again while the file is
processed (`video_render`).
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import av
from av.audio.stream import AudioStream
from av.container import InputContainer
from av.stream import Stream
from av.video.stream import VideoStream

from app.domain.rejections import Rejected, RejectionCode
from workers.processing.failures import VIDEO, judged
from workers.processing.video_boxes import sample_entry_types

# The top-level boxes an MP4 (ISO/IEC 14496-12) or QuickTime file can start with. Anything else is not the
# declared type: Matroska/WebM starts with the EBML magic 1A 45 DF A3, a JPEG with FF D8.
_LEADING_BOXES = frozenset({b"ftyp", b"moov", b"mdat", b"free", b"skip", b"wide", b"pnot", b"uuid"})
# FFmpeg's MP4/QuickTime demuxer ("mov,mp4,m4a,3gp,3g2,mj2"); its external data references stay off.
_DEMUXER = "mov"
# What the phone apps record in; the 720p rendition carries AAC too. Other audio is re-encoded to AAC.
AUDIO_COPIED = frozenset({"aac"})
# The processing budget (`MediaKind.max_video_pixel_seconds`) counts every frame as 1/30 s of its pixels:
# decoding and encoding cost per frame, whatever timestamps the file gives its frames.
COST_FRAMES_PER_SECOND = 30


@dataclass(frozen=True)
class Probe:
    """The streams the outputs are made of, and what the headers say about them."""

    video: VideoStream
    audio: AudioStream | None  # None: the upload has no (usable) sound
    codec: str  # of the video: "h264", "hevc"
    width: int  # coded, before rotation
    height: int
    duration_seconds: float  # the longest the headers or the sample table claim


def decoder_options(max_frame: tuple[int, int]) -> dict[str, str]:
    """Options that make FFmpeg's decoders refuse a frame far over `max_frame` before allocating it (twice
    the area: decoders count coded sizes, rounded up to whole macroblocks; the exact rule is checked on the
    decoded frames, as `video_too_large`)."""
    return {"max_pixels": str(2 * max_frame[0] * max_frame[1])}


def is_mp4(source: Path) -> bool:
    """Whether the first box of `source` is one an MP4/QuickTime file starts with."""
    with source.open("rb") as fp:
        header = fp.read(8)
    return len(header) == 8 and header[4:8] in _LEADING_BOXES


@contextmanager
def open_source(source: Path, max_frame: tuple[int, int]) -> Iterator[InputContainer]:
    """The upload opened by the MP4/QuickTime demuxer; `type_mismatch` or `corrupt` if it cannot be.

    Opening decodes the first frame or two (FFmpeg learns the pixel format from them), by decoders told to
    refuse frames far over `max_frame` before allocating them. (Skipping those frames instead leaves the pixel
    format unknown, which costs the frame-threaded decoder a third of its speed later.)
    """
    if not is_mp4(source):
        raise Rejected(RejectionCode.TYPE_MISMATCH, "not an MP4 or QuickTime file")
    with judged(VIDEO, "the MP4 container"):
        container = av.open(str(source), format=_DEMUXER, options=decoder_options(max_frame))
    try:
        yield container
    finally:
        container.close()


def probe(
    container: InputContainer,
    file_size: int,
    allowed_codecs: Iterable[str],
    max_seconds: float,
    max_frame: tuple[int, int],
    max_pixel_seconds: float | None = None,
) -> Probe:
    """Check the headers against the rules; raises `Rejected` with the first rule broken."""
    video = _main_video(container)
    codec = _codec_name(video, container)
    if video.codec_context is None:
        raise Rejected(RejectionCode.UNSUPPORTED_CODEC, f"{codec} video has no decoder in this build")
    if codec not in allowed_codecs:
        raise Rejected(RejectionCode.UNSUPPORTED_CODEC, f"{codec} video is not accepted")
    check_frame_size(video.width, video.height, max_frame)
    audio = _main_audio(container)
    streams = [video] if audio is None else [video, audio]
    duration = _duration(container, streams)
    if duration > max_seconds:
        raise Rejected(RejectionCode.VIDEO_TOO_LONG, f"{duration:.0f} s is over {max_seconds:.0f} s")
    if (end := _data_end(streams)) > file_size:
        raise Rejected(RejectionCode.CORRUPT, f"the file is truncated: samples end at byte {end:,}")
    if max_pixel_seconds is not None:
        frames = len(video.index_entries) or video.frames or round(duration * float(video.average_rate or 30))
        check_cost(frames, video.width * video.height, max_pixel_seconds)
    return Probe(video, audio, codec, video.width, video.height, duration)


def frame_cost(pixels: int) -> float:
    """What decoding (and encoding) one frame of `pixels` costs, in pixel-seconds (`MediaKind`'s unit)."""
    return pixels / COST_FRAMES_PER_SECOND


def check_cost(frames: int, pixels: int, max_pixel_seconds: float) -> None:
    """`too_complex` when `frames` frames of `pixels` pixels cost more than the kind allows."""
    if frames * frame_cost(pixels) > max_pixel_seconds:
        seconds_allowed = max_pixel_seconds / pixels
        raise Rejected(
            RejectionCode.TOO_COMPLEX,
            f"{frames:,} frames of {pixels / 1e6:.1f} MP cost more to process than this kind allows "
            f"(at this frame size: {seconds_allowed:.0f} s at {COST_FRAMES_PER_SECOND} fps)",
        )


def check_frame_size(width: int, height: int, max_frame: tuple[int, int]) -> None:
    """`video_too_large` for a frame over `max_frame` in either orientation (portrait 2160x3840 passes)."""
    if width <= 0 or height <= 0:
        raise Rejected(RejectionCode.CORRUPT, "the video stream has no frame size")
    if max(width, height) > max(max_frame) or min(width, height) > min(max_frame):
        raise Rejected(
            RejectionCode.VIDEO_TOO_LARGE, f"{width}x{height} is over {max_frame[0]}x{max_frame[1]}"
        )


def _main_video(container: InputContainer) -> VideoStream:
    """The video track players pick; cover art (an attached picture) is not a video."""
    if not len(container.streams):  # no movie header at all: cut off before the `moov` at its end
        raise Rejected(RejectionCode.CORRUPT, "the file has no tracks (truncated before its movie header)")
    videos = [s for s in container.streams.video if not s.disposition & av.stream.Disposition.attached_pic]
    if not videos:
        raise Rejected(RejectionCode.NO_VIDEO_STREAM, "the file has no video track")
    return next((s for s in videos if s.disposition & av.stream.Disposition.default), videos[0])


def _codec_name(video: VideoStream, container: InputContainer) -> str:
    """The video's codec by its canonical name ("av1", not the decoder "libdav1d"); a codec FFmpeg does not
    know (Dolby Vision AV1, `dav1`) by the four letters of its sample entry."""
    if video.codec_context is not None:
        return video.codec_context.codec.canonical_name
    return sample_entry_types(container.name).get(video.index) or "unknown"


def _main_audio(container: InputContainer) -> AudioStream | None:
    """AAC when there is an AAC track (iPhones add one beside spatial audio), else a track FFmpeg decodes."""
    tracks = list(container.streams.audio)
    aac = [s for s in tracks if s.codec_context is not None and s.codec_context.name in AUDIO_COPIED]
    decodable = [s for s in tracks if s.codec_context is not None and s.codec_context.channels > 0]
    return (aac or decodable or [None])[0]


def _duration(container: InputContainer, streams: list[Stream]) -> float:
    """The longest duration claimed anywhere: the movie header, the track headers and the sample tables."""
    claims = [container.duration / 1_000_000 if container.duration else 0.0]
    for stream in streams:
        base = float(stream.time_base or 0)
        start = stream.start_time or 0
        if stream.duration:
            claims.append(stream.duration * base)
        if len(stream.index_entries):
            claims.append((stream.index_entries[-1].timestamp - start) * base)
    return max(claims)


def _data_end(streams: list[Stream]) -> int:
    """The byte offset where the last sample of `streams` ends, from the sample tables."""
    return max((e.pos + e.size for s in streams for e in s.index_entries), default=0)
