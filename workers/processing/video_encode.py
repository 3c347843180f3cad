"""The video's output files: MP4s written packet by packet, the 720p rendition's scaler and x264 encoder.

`video_render` drives them in its one pass over the upload. A new MP4 carries no metadata unless it is written
into it: a copied track takes only the codec parameters of its source (with the coded side data: the display
matrix, so the video still plays upright, and HDR parameters), never its tags or the container's.
"""

from __future__ import annotations

from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from av.audio.frame import AudioFrame
from av.audio.resampler import AudioResampler
from av.audio.stream import AudioStream
from av.container import OutputContainer
from av.packet import Packet
from av.stream import Stream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream

from app.domain.rejections import Rejected, RejectionCode
from workers.processing.video_probe import AUDIO_COPIED

# `faststart`: the sample table goes before the media data, so a browser starts playing before the whole file
# is downloaded. `bitexact`: not even the muxer's own name and a creation time are written.
MP4_OPTIONS = {"movflags": "+faststart", "fflags": "+bitexact"}
# Audio that is not AAC (PCM from some cameras, spatial formats) becomes AAC-LC at this rate, in both outputs.
AAC_BIT_RATE = 128_000
_AAC_SAMPLE_RATES = frozenset({44_100, 48_000})
# libavfilter's turn that makes a frame upright, by the counter-clockwise rotation of its display matrix.
_UPRIGHT_FILTERS = {90: "transpose=cclock", 180: "hflip,vflip", 270: "transpose=clock"}


@dataclass(frozen=True)
class Encoding:
    """How the 720p rendition is made (also the benchmark's ffmpeg command line)."""

    long_side: int
    preset: str
    crf: int
    x264_params: str
    threads: int  # FFmpeg's decoder, scaler and x264 threads (0: one per core, and more)


def quarter_turns(frame: VideoFrame) -> int:
    """The frame's display rotation (counter-clockwise degrees), snapped to 0, 90, 180 or 270."""
    return round((frame.rotation or 0) / 90) % 4 * 90


def upright_size(width: int, height: int, rotation: int) -> tuple[int, int]:
    return (height, width) if rotation in (90, 270) else (width, height)


def rendition_size(width: int, height: int, long_side: int) -> tuple[int, int]:
    """Fit inside `long_side`, never upscale; even sides, as 4:2:0 H.264 needs."""
    scale = min(1.0, long_side / max(width, height))
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def decode(decoder: av.CodecContext, packet: Packet | None) -> list[av.frame.Frame]:
    """`decoder.decode(packet)`; a stream that does not decode is `corrupt`."""
    try:
        return decoder.decode(packet)
    except av.error.MemoryError:
        raise
    except av.FFmpegError as exc:
        raise Rejected(RejectionCode.CORRUPT, f"the {decoder.name} stream does not decode: {exc}") from exc


class Mp4Output:
    """One output file: the source's video track copied or encoded, its audio copied or encoded to AAC.

    A rendition's video track exists only once the first frame is decoded (its size depends on the frame's
    rotation); packets muxed before then (audio) wait in `pending`, a few frames' worth.
    """

    def __init__(self, path: Path, video: VideoStream | None, audio: AudioInput) -> None:
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


class AudioInput:
    """The kept audio track: its packets copied to every output, or decoded once and encoded by each."""

    def __init__(self, stream: AudioStream | None) -> None:
        self.stream = stream
        self.copied = stream is not None and stream.codec_context.name in AUDIO_COPIED

    def feed(self, packet: Packet | None, outputs: list[Mp4Output]) -> None:
        if self.stream is None or (packet is None and self.copied):
            return
        if self.copied:
            for output in outputs:
                output.mux_audio(packet)
            return
        frames = decode(self.stream.codec_context, packet)
        for output in outputs:
            for frame in frames:
                output.encode_audio(frame)
            if packet is None:
                output.encode_audio(None)


class Rendition:
    """The 720p MP4: decoded frames through scale (+ turn upright) into libx264, opened on the first frame."""

    def __init__(self, path: Path, source: VideoStream, audio: AudioInput, encoding: Encoding) -> None:
        self.mp4 = Mp4Output(path, None, audio)
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
            self.mp4.mux(self._encode(None))
        self.mp4.container.close()

    def _drain(self) -> None:
        while True:
            try:
                scaled = self.graph.vpull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            self.mp4.mux(self._encode(scaled))

    def _encode(self, frame: VideoFrame | None) -> list[Packet]:
        try:
            return self.stream.encode(frame)
        except av.error.MemoryError:
            raise
        except av.FFmpegError as exc:
            # libx264 fails on a well-formed frame only when an allocation fails (FFmpeg reports it as a
            # "generic error"): a memory verdict (`too_large_to_process`), not a crash to retry.
            raise MemoryError(f"x264 could not encode a frame: {exc}") from exc

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
            "x264-params": self.encoding.x264_params,
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
