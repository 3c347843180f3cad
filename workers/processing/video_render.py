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
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream
from av.container import InputContainer, OutputContainer
from av.packet import Packet
from av.stream import Stream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from PIL import Image

from app.domain.rejections import Rejected, RejectionCode
from workers.processing.video_probe import AUDIO_COPIED, Probe, check_frame_size, decoder_options

# `faststart`: the sample table goes before the media data, so a browser starts playing before the whole file
# is downloaded. `bitexact`: not even the muxer's own name and a creation time are written.
MP4_OPTIONS = {"movflags": "+faststart", "fflags": "+bitexact"}
# Audio that is not AAC (PCM from some cameras, spatial formats) becomes AAC-LC at this rate, in both outputs.
AAC_BIT_RATE = 128_000
_AAC_SAMPLE_RATES = frozenset({44_100, 48_000})
POSTER_SECONDS = 1.0
# Packets may end a little after the duration the headers claim (the last frame's own duration).
_DURATION_SLACK_SECONDS = 1.0
# libavfilter's turn that makes a frame upright, by the counter-clockwise rotation of its display matrix.
_UPRIGHT_FILTERS = {90: "transpose=cclock", 180: "hflip,vflip", 270: "transpose=clock"}
_UPRIGHT_TRANSPOSE = {
    90: Image.Transpose.ROTATE_90,
    180: Image.Transpose.ROTATE_180,
    270: Image.Transpose.ROTATE_270,
}


@dataclass(frozen=True)
class Encoding:
    """How the 720p rendition is made (also the benchmark's ffmpeg command line)."""

    long_side: int
    preset: str
    crf: int
    x264_params: str
    threads: int  # FFmpeg's decoder, scaler and x264 threads (0: one per core, and more)


@dataclass(frozen=True)
class Rendered:
    """What the pass found and made; sizes are upright (rotation applied)."""

    width: int
    height: int
    duration_seconds: float
    poster: VideoFrame  # as decoded: see `upright_picture`
    rendition: tuple[int, int] | None  # its size, when one was made


def quarter_turns(frame: VideoFrame) -> int:
    """The frame's display rotation (counter-clockwise degrees), snapped to 0, 90, 180 or 270."""
    return round((frame.rotation or 0) / 90) % 4 * 90


def upright_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    return (height, width) if rotation in (90, 270) else (width, height)


def rendition_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """Fit inside `long_side`, never upscale; even sides, as 4:2:0 H.264 needs."""
    scale = min(1.0, long_side / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def render(
    container: InputContainer,
    probe: Probe,
    workdir: Path,
    encoding: Encoding,
    max_seconds: float,
    max_frame: tuple[int, int],
) -> Rendered:
    """Write `workdir/video.mp4` and, when the source needs one, `workdir/720p.mp4`; pick the poster."""
    needs_rendition = probe.codec != "h264" or max(probe.width, probe.height) > encoding.long_side
    decoder = probe.video.codec_context
    decoder.thread_type = "AUTO"  # frame threads: phone videos are rarely coded in slices
    decoder.thread_count = encoding.threads
    decoder.options = decoder_options(max_frame)
    clock = _Clock(max_seconds + _DURATION_SLACK_SECONDS)
    poster = _PosterPicker()
    audio_in = _AudioInput(probe.audio)
    main = _Mp4(workdir / "video.mp4", probe.video, audio_in)
    rendition = _Rendition(workdir / "720p.mp4", probe.video, audio_in, encoding) if needs_rendition else None
    outputs = [main] if rendition is None else [main, rendition.mp4]
    rotation = 0
    streams = [probe.video] if probe.audio is None else [probe.video, probe.audio]
    try:
        for packet in _demux(container, streams):
            clock.tick(packet)
            if packet.stream is probe.video:
                if rendition is not None or poster.wanted:
                    rotation = _feed(decoder, packet, max_frame, poster, rendition, rotation)
                main.mux_video(packet)
            else:
                audio_in.feed(packet, outputs)
        _feed(decoder, None, max_frame, poster, rendition, rotation)
        audio_in.feed(None, outputs)
        if rendition is not None:
            rendition.finish()
        main.container.close()
    except BaseException:
        for output in outputs:  # half-written files: the caller's work directory goes away with them
            with contextlib.suppress(Exception):
                output.container.close()
        raise
    width, height = upright_size(probe.width, probe.height, rotation)
    size = rendition.size if rendition is not None else None
    return Rendered(width, height, clock.seconds, poster.frame(), size)


def _feed(
    decoder: av.CodecContext,
    packet: Packet | None,
    max_frame: tuple[int, int],
    poster: _PosterPicker,
    rendition: _Rendition | None,
    rotation: int,
) -> int:
    """Decode `packet` (None: flush) and pass its frames on; returns the frames' rotation. (A function, so
    that no frame outlives its use in a local variable: each one held is a buffer more in the pool.)"""
    for frame in _decode(decoder, packet):
        check_frame_size(frame.width, frame.height, max_frame)  # the codec may disagree with the headers
        rotation = quarter_turns(frame)
        poster.offer(frame)
        if rendition is not None:
            rendition.encode(frame)
    return rotation


def _demux(container: InputContainer, streams: list[Stream]) -> Iterator[Packet]:
    """The packets of `streams` in file order (flush packets left out); a read error is `corrupt`."""
    try:
        for packet in container.demux(streams):
            if packet.dts is not None and packet.size:
                yield packet
    except av.error.MemoryError:
        raise
    except av.FFmpegError as exc:
        raise Rejected(RejectionCode.CORRUPT, f"the file does not read to its end: {exc}") from exc


def _decode(decoder: av.CodecContext, packet: Packet | None) -> list[av.frame.Frame]:
    try:
        return decoder.decode(packet)
    except av.error.MemoryError:
        raise
    except av.FFmpegError as exc:
        raise Rejected(RejectionCode.CORRUPT, f"the {decoder.name} stream does not decode: {exc}") from exc


class _Clock:
    """The span the packets cover: the measured duration, and `video_too_long` for a header that lied."""

    def __init__(self, limit: float) -> None:
        self.limit = limit
        self.start: float | None = None
        self.end = 0.0

    def tick(self, packet: Packet) -> None:
        base = packet.time_base
        begin = float((packet.pts if packet.pts is not None else packet.dts) * base)
        self.start = begin if self.start is None else min(self.start, begin)
        self.end = max(self.end, begin + float((packet.duration or 0) * base))
        if self.end - self.start > self.limit:
            raise Rejected(RejectionCode.VIDEO_TOO_LONG, f"the packets go on past {self.limit:.0f} s")

    @property
    def seconds(self) -> float:
        return round(self.end - (self.start or 0.0), 3)


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


def upright_picture(frame: VideoFrame) -> Image.Image:
    """The frame as an RGB picture the right way up."""
    picture = frame.to_image()
    turn = _UPRIGHT_TRANSPOSE.get(quarter_turns(frame))
    return picture.transpose(turn) if turn is not None else picture


class _Mp4:
    """One output file: the source's video track copied or encoded, its audio copied or encoded to AAC.

    A rendition's video track exists only once the first frame is decoded (its size depends on the frame's
    rotation); packets muxed before then (audio) wait in `pending`, a few frames' worth.
    """

    def __init__(self, path: Path, video: VideoStream | None, audio: _AudioInput) -> None:
        self.container: OutputContainer = av.open(str(path), "w", format="mp4", options=MP4_OPTIONS)
        self.video = self.container.add_stream_from_template(video) if video is not None else None
        self.pending: list[Packet] | None = None if video is not None else []
        self.audio: Stream | None = None
        self.resampler: AudioResampler | None = None
        if audio.stream is not None and audio.copied:
            self.audio = self.container.add_stream_from_template(audio.stream)
        elif audio.stream is not None:
            channels = min(2, audio.stream.codec_context.channels)
            rate = audio.stream.rate if audio.stream.rate in _AAC_SAMPLE_RATES else 48_000
            layout = "stereo" if channels == 2 else "mono"
            self.audio = self.container.add_stream("aac", rate=rate, layout=layout)
            self.audio.bit_rate = AAC_BIT_RATE
            self.resampler = AudioResampler(format="fltp", layout=layout, rate=rate, frame_size=1024)

    def mux(self, packets: Packet | list[Packet]) -> None:
        if self.pending is not None:
            self.pending.extend(packets if isinstance(packets, list) else [packets])
        else:
            self.container.mux(packets)

    def video_ready(self, stream: VideoStream) -> None:
        self.video, pending, self.pending = stream, self.pending or [], None
        self.container.mux(pending)

    def mux_video(self, packet: Packet) -> None:
        packet.stream = self.video
        self.mux(packet)

    def mux_audio(self, packet: Packet) -> None:
        packet.stream = self.audio
        self.mux(packet)

    def encode_audio(self, frame: AudioFrame | None) -> None:
        for resampled in self.resampler.resample(frame):
            self.mux(self.audio.encode(resampled))
        if frame is None:
            self.mux(self.audio.encode(None))


class _AudioInput:
    """The kept audio track: its packets copied to every output, or decoded once and encoded by each."""

    def __init__(self, stream: AudioStream | None) -> None:
        self.stream = stream
        self.copied = stream is not None and stream.codec_context.name in AUDIO_COPIED

    def feed(self, packet: Packet | None, outputs: list[_Mp4]) -> None:
        if self.stream is None or (packet is None and self.copied):
            return
        if self.copied:
            for output in outputs:
                output.mux_audio(packet)
            return
        frames = _decode(self.stream.codec_context, packet)
        for output in outputs:
            for frame in frames:
                output.encode_audio(frame)
            if packet is None:
                output.encode_audio(None)


class _Rendition:
    """The 720p MP4: decoded frames through scale (+ turn upright) into libx264, opened on the first frame."""

    def __init__(self, path: Path, source: VideoStream, audio: _AudioInput, encoding: Encoding) -> None:
        self.mp4 = _Mp4(path, None, audio)
        self.source = source
        self.encoding = encoding
        self.graph: av.filter.Graph | None = None
        self.stream: VideoStream | None = None
        self.size = (0, 0)

    def encode(self, frame: VideoFrame) -> None:
        if self.graph is None:
            self._open(frame)
        self.graph.vpush(frame)
        self._drain()

    def finish(self) -> None:
        if self.graph is not None:
            self.graph.vpush(None)
            self._drain()
            self.mp4.mux(self.stream.encode(None))
        self.mp4.container.close()

    def _drain(self) -> None:
        while True:
            try:
                scaled = self.graph.vpull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            self.mp4.mux(self.stream.encode(scaled))

    def _open(self, frame: VideoFrame) -> None:
        rotation = quarter_turns(frame)
        upright = upright_size(frame.width, frame.height, rotation)
        self.size = rendition_size(*upright, self.encoding.long_side)
        scaled = upright_size(*self.size, rotation)  # the scaler works before the turn
        time_base = self.source.time_base or Fraction(1, 90_000)
        graph = av.filter.Graph()
        graph.threads = self.encoding.threads
        chain = [
            graph.add_buffer(
                width=frame.width, height=frame.height, format=frame.format, time_base=time_base
            ),
            graph.add("scale", f"{scaled[0]}:{scaled[1]}"),
            graph.add("format", "yuv420p"),
        ]
        for turn in filter(None, _UPRIGHT_FILTERS.get(rotation, "").split(",")):
            name, _, args = turn.partition("=")
            chain.append(graph.add(name, args or None))
        chain.append(graph.add("buffersink"))
        graph.link_nodes(*chain).configure()
        self.graph = graph

        rate = self.source.average_rate or self.source.guessed_rate or Fraction(30)
        options = {
            "preset": self.encoding.preset,
            "crf": str(self.encoding.crf),
            **eval(__import__("os").environ.get("X264", "{}")),
        }
        stream = self.mp4.container.add_stream("libx264", rate=rate, options=options)
        stream.width, stream.height = self.size
        stream.pix_fmt = "yuv420p"
        stream.time_base = time_base
        stream.codec_context.time_base = time_base
        stream.thread_count = self.encoding.threads
        for tag in ("color_range", "color_primaries", "color_trc", "colorspace"):
            setattr(stream.codec_context, tag, getattr(frame, tag))
        self.stream = stream
        self.mp4.video_ready(stream)
