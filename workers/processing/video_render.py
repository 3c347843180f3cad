"""The video's outputs, made in one streaming pass over the upload: remuxed main file, 720p rendition, poster.

One loop reads the upload packet by packet, in file order, and hands each packet to the outputs that need it:

- main (`video.mp4`): every packet of the kept video and audio tracks is copied into a new MP4. A new file
  carries no metadata unless it is written into it: only codec parameters are taken from the source (with its
  coded side data: the display matrix, so the video still plays upright, and HDR parameters). Timed metadata
  tracks, cover art and the container's and tracks' tags (the recording location, the phone's model, dates)
  are left behind.
- 720p (`720p.mp4`): the decoded frames scaled (and turned upright) by one libavfilter graph and encoded by
  libx264; audio as in the main file.
- poster: one decoded frame about 1 s in, turned upright, handed to the image stage by the caller.

Video frames are decoded only while an output needs them: with no rendition to make, decoding stops once the
poster frame is found and the rest of the file is only copied. Memory stays flat whatever the file size: the
demuxer reads one packet at a time, the decoder keeps its reference frames, x264 its lookahead, the muxers
their sample tables (and `faststart` rewrites the file through a small buffer).
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator
from dataclasses import dataclass, replace
from pathlib import Path

import av
from av.container import InputContainer
from av.packet import Packet
from av.stream import Stream
from av.video.frame import VideoFrame
from PIL import Image

from app.domain.rejections import Rejected, RejectionCode
from workers.processing.failures import VIDEO, judged
from workers.processing.video_encode import (
    AudioInput,
    Encoding,
    Mp4Output,
    Rendition,
    decode,
    quarter_turns,
    sdr_picture,
    upright_size,
)
from workers.processing.video_probe import Probe, check_cost, check_frame_size, decoder_options, frame_cost
from workers.processing.video_tonemap import is_hdr

POSTER_SECONDS = 1.0
# The most frames a second a phone records (iPhone slow motion): more frames than that per second of
# timestamps count as time of their own.
MAX_FPS = 240
# Packets may end a little after the duration the headers claim (the last frame's own duration).
_DURATION_SLACK_SECONDS = 1.0
_UPRIGHT_TRANSPOSE = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


@dataclass(frozen=True)
class Rendered:
    """What the pass found and made; sizes are upright (rotation applied)."""

    width: int
    height: int
    duration_seconds: float
    poster: VideoFrame  # as decoded: see `upright_picture`
    rendition: tuple[int, int] | None  # its size, when one was made
    main_codec: str  # the source's when copied, "h264" when the main file had to be encoded


@dataclass(frozen=True)
class PassLimits:
    """What one pass may read: the kind's duration, the frame size, the processing budget (pixel-seconds,
    `MediaKind.max_video_pixel_seconds`; None: no budget)."""

    max_seconds: float
    max_frame: tuple[int, int]
    max_pixel_seconds: float | None = None


def render(
    container: InputContainer,
    probe: Probe,
    workdir: Path,
    encoding: Encoding,
    limits: PassLimits,
    remux: bool = True,
) -> Rendered:
    """Write `workdir/video.mp4` and, when the source needs one, `workdir/720p.mp4`; pick the poster.

    `remux`: the main file copies the upload's packets (raises `NotRemuxable` if the muxer refuses them);
    else it is encoded from the decoded frames at the source's size, like the rendition.
    """
    needs_rendition = probe.codec != "h264" or max(probe.width, probe.height) > encoding.long_side
    decoder = probe.video.codec_context
    decoder.thread_type = "AUTO"  # frame threads: phone videos are rarely coded in slices
    decoder.thread_count = encoding.threads
    decoder.options = decoder_options(limits.max_frame)
    clock = _Clock(limits, probe.width * probe.height)
    poster = _PosterPicker()
    audio_in = AudioInput(probe.audio, copy=remux)
    encoders = []
    if remux:
        main = Mp4Output(workdir / "video.mp4", probe.video, audio_in, probe.codec)
    else:
        encoded_main = Rendition(workdir / "video.mp4", probe.video, audio_in, _full_size(encoding, probe))
        main, encoders = encoded_main.mp4, [encoded_main]
    if needs_rendition:
        encoders.append(Rendition(workdir / "720p.mp4", probe.video, audio_in, encoding))
    outputs = [main, *(e.mp4 for e in encoders if e.mp4 is not main)]
    rotation = 0
    streams = [probe.video] if probe.audio is None else [probe.video, probe.audio]
    try:
        for packet in _demux(container, streams):
            clock.tick(packet, packet.stream is probe.video)
            if packet.stream is probe.video:
                if encoders or poster.wanted:
                    rotation = _feed(decoder, packet, limits.max_frame, poster, encoders, rotation)
                if remux:
                    main.mux_video(packet)
            else:
                audio_in.feed(packet, outputs)
        _feed(decoder, None, limits.max_frame, poster, encoders, rotation)
        if remux:
            main.mux_video(None)
        audio_in.feed(None, outputs)
        for encoder in encoders:
            encoder.finish()
        if remux:
            main.close()
    except BaseException:
        for output in outputs:  # half-written files: the caller's work directory goes away with them
            with contextlib.suppress(Exception):
                output.container.close()
        raise
    width, height = upright_size(probe.width, probe.height, rotation)
    rendition = next((e for e in encoders if e.path.name == "720p.mp4"), None)
    size = rendition.size if rendition is not None else None
    main_codec = probe.codec if remux else "h264"
    return Rendered(width, height, clock.seconds, poster.frame(), size, main_codec)


def _full_size(encoding: Encoding, probe: Probe) -> Encoding:
    """The rendition's encoding at the source's own size: the main file when it cannot be copied."""
    return replace(encoding, long_side=max(probe.width, probe.height))


def _feed(
    decoder: av.CodecContext,
    packet: Packet | None,
    max_frame: tuple[int, int],
    poster: _PosterPicker,
    encoders: list[Rendition],
    rotation: int,
) -> int:
    """Decode `packet` (None: flush) and pass its frames on; returns the frames' rotation. (A function, so
    that no frame outlives its use in a local variable: each one held is a buffer more in the pool.)"""
    for frame in decode(decoder, packet):
        check_frame_size(frame.width, frame.height, max_frame)  # the codec may disagree with the headers
        rotation = quarter_turns(frame)
        poster.offer(frame)
        for encoder in encoders:
            encoder.encode(frame)
    return rotation


def _demux(container: InputContainer, streams: list[Stream]) -> Iterator[Packet]:
    """The packets of `streams` in file order (flush packets left out); read errors judged by the table."""
    with judged(VIDEO, "the file"):
        for packet in container.demux(streams):
            if packet.dts is not None and packet.size:
                yield packet


class _Clock:
    """What the packets cover, counted as they come, whatever the headers said: the span of their timestamps
    (the measured duration; past the kind's limit: `video_too_long`) and the frames' processing cost (past the
    kind's budget: `too_complex`). A video frame counts for at least 1/`MAX_FPS` s, so frames crowded onto
    one timestamp (sample durations of 0) still count as time."""

    def __init__(self, limits: PassLimits, pixels: int) -> None:
        self.limit = limits.max_seconds + _DURATION_SLACK_SECONDS
        self.budget = limits.max_pixel_seconds
        self.pixels = pixels
        self.start: float | None = None
        self.end = 0.0
        self.frames = 0

    def tick(self, packet: Packet, video: bool) -> None:
        base = packet.time_base
        # Before 0: encoder priming (AAC's first 1,024 samples) an edit list hides; it is never shown.
        begin = max(0.0, float((packet.pts if packet.pts is not None else packet.dts) * base))
        self.start = begin if self.start is None else min(self.start, begin)
        self.end = max(self.end, begin + float((packet.duration or 0) * base))
        if video:
            self.frames += 1
            if self.budget is not None and self.frames * frame_cost(self.pixels) > self.budget:
                check_cost(self.frames, self.pixels, self.budget)
        if self.seconds > self.limit:
            raise Rejected(RejectionCode.VIDEO_TOO_LONG, f"the packets go on past {self.limit:.0f} s")

    @property
    def seconds(self) -> float:
        return round(max(self.end - (self.start or 0.0), self.frames / MAX_FPS), 3)


class _PosterPicker:
    """Keeps the first frame until one about `POSTER_SECONDS` after it arrives. The chosen frame is kept as
    decoded (4:2:0 is half the bytes of RGB) and made a picture after the pass, when x264's and the decoder's
    buffers are gone: the pass's peak memory is then the codecs' alone."""

    def __init__(self) -> None:
        self.first: VideoFrame | None = None
        self.chosen: VideoFrame | None = None

    @property
    def wanted(self) -> bool:
        return self.chosen is None

    def offer(self, frame: VideoFrame) -> None:
        if self.chosen is not None:
            return
        if self.first is None:
            self.first = frame
        if frame.time is not None and frame.time - (self.first.time or 0.0) >= POSTER_SECONDS - 0.02:
            self.chosen, self.first = frame, None

    def frame(self) -> VideoFrame:
        chosen = self.chosen or self.first
        if chosen is None:
            raise Rejected(RejectionCode.CORRUPT, "no frame of the video decodes")
        return chosen


def upright_picture(frame: VideoFrame, workdir: Path) -> Image.Image:
    """The frame as an RGB picture the right way up (tone-mapped to SDR if it is HDR: JPEG posters are SDR)."""
    picture = sdr_picture(frame, workdir) if is_hdr(frame.color_trc) else frame.to_image()
    turn = _UPRIGHT_TRANSPOSE.get(quarter_turns(frame))
    return picture.transpose(turn) if turn is not None else picture
