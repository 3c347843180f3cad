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
from av.bitstream import BitStreamFilterContext
from av.container import OutputContainer
from av.packet import Packet
from av.stream import Stream
from av.video.frame import VideoFrame
from av.video.stream import VideoStream
from PIL import Image

from workers.processing.failures import VIDEO, judged
from workers.processing.video_probe import AUDIO_COPIED
from workers.processing.video_remux import NotRemuxable, Retimer, strip_user_data
from workers.processing.video_tonemap import is_hdr, write_lut

# `faststart`: the sample table goes before the media data, so a browser starts playing before the whole file
# is downloaded. `bitexact`: not even the muxer's own name and a creation time are written.
MP4_OPTIONS = {"movflags": "+faststart", "fflags": "+bitexact"}
# Audio that is not AAC (PCM from some cameras, spatial formats) becomes AAC-LC at this rate, in both outputs.
AAC_BIT_RATE = 128_000
_AAC_SAMPLE_RATES = frozenset({44_100, 48_000})
_STRIP_ENCODED_SEI = "filter_units=remove_types=6"
_AAC_FRAME = 1024  # samples per AAC frame
# FFmpeg's AVColorPrimaries / AVColorTransferCharacteristic / AVColorSpace value for BT.709, and AVCOL_RANGE_MPEG.
_BT709 = 1
_LIMITED_RANGE = 1
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
    """`decoder.decode(packet)`, judged by the video failure table (`corrupt`, `unsupported_codec`)."""
    with judged(VIDEO, f"the {decoder.name} stream"):
        return decoder.decode(packet)


class Mp4Output:
    """One output file: the source's video track copied or encoded, its audio copied or encoded to AAC.

    A copied video track (`codec` given) goes through `strip_user_data` and a `Retimer`; whatever the muxer
    then refuses of a copy is `NotRemuxable`, never a verdict. An encoded video track exists only once the
    first frame is decoded (its size depends on the frame's rotation); packets muxed before then (audio) wait
    in `pending`, a few frames' worth.
    """

    def __init__(self, path: Path, video: VideoStream | None, audio: AudioInput, codec: str = "") -> None:
        self.container: OutputContainer = av.open(str(path), "w", format="mp4", options=MP4_OPTIONS)
        self.copies = video is not None
        self.video = self.container.add_stream_from_template(video) if video is not None else None
        self.strip = strip_user_data(codec, video.codec_context.extradata) if video is not None else None
        if self.strip is not None and self.video.codec_context.extradata:
            self.video.codec_context.extradata = self.strip.configuration(self.video.codec_context.extradata)
        self.retimer = Retimer()
        self.pending: list[Packet] | None = None if video is not None else []
        self.audio: Stream | None = None
        self.aac: AacEncoder | None = None
        if audio.stream is not None and audio.copied:
            self.audio = self.container.add_stream_from_template(audio.stream)
        elif audio.stream is not None:
            self.aac = AacEncoder(self.container, audio.stream)
            self.audio = self.aac.stream

    def mux(self, packets: Packet | list[Packet]) -> None:
        if self.pending is not None:
            self.pending.extend(packets if isinstance(packets, list) else [packets])
            return
        if not self.copies:
            self.container.mux(packets)
            return
        try:
            self.container.mux(packets)
        except av.error.MemoryError:
            raise
        except av.FFmpegError as exc:
            raise NotRemuxable(f"the MP4 muxer refuses a copied packet: {exc}") from exc

    def video_ready(self, stream: VideoStream) -> None:
        self.video, pending, self.pending = stream, self.pending or [], None
        self.container.mux(pending)

    def mux_video(self, packet: Packet | None) -> None:
        """Copy `packet` (None: the end of the stream) into the video track."""
        packets = [packet] if packet is not None else []
        if self.strip is not None:
            packets = [self.strip.packet(p) for p in packets]
        for ready in [p for q in packets for p in self.retimer.push(q)] + (
            self.retimer.flush() if packet is None else []
        ):
            ready.stream = self.video
            self.mux(ready)

    def mux_audio(self, packet: Packet) -> None:
        packet.stream = self.audio
        self.mux(packet)

    def encode_audio(self, frame: AudioFrame | None) -> None:
        if self.aac is not None:
            self.mux(self.aac.encode(frame))

    def close(self) -> None:
        if not self.copies:
            self.container.close()
            return
        try:
            self.container.close()
        except av.error.MemoryError:
            raise
        except av.FFmpegError as exc:
            raise NotRemuxable(f"the MP4 muxer cannot finish the copy: {exc}") from exc


class AacEncoder:
    """Sound that is not copied, as AAC-LC: resampled frame by frame into one sample format, layout and rate.

    A decoded track may change format mid-stream (an MP3 going from 44.1 to 48 kHz, mono to stereo): the
    resampler is made again for each new input format (after draining the old one), and a FIFO cuts what
    comes out into the 1,024-sample frames AAC needs, timed by the samples written.
    """

    def __init__(self, container: OutputContainer, source: AudioStream) -> None:
        channels = min(2, source.codec_context.channels)
        self.rate = source.rate if source.rate in _AAC_SAMPLE_RATES else 48_000
        self.layout = "stereo" if channels == 2 else "mono"
        self.stream = container.add_stream("aac", rate=self.rate, layout=self.layout)
        self.stream.bit_rate = AAC_BIT_RATE
        self.resampler: AudioResampler | None = None
        self.input_format: tuple[str, str, int] | None = None
        self.fifo = av.AudioFifo()
        self.samples = 0

    def encode(self, frame: AudioFrame | None) -> list[Packet]:
        for resampled in self._resample(frame):
            resampled.pts = None  # the FIFO checks continuity; times are given on the way out
            self.fifo.write(resampled)
        packets: list[Packet] = []
        while self.fifo.samples >= _AAC_FRAME or (frame is None and self.fifo.samples):
            packets += self.stream.encode(self._timed(self.fifo.read(_AAC_FRAME, partial=frame is None)))
        if frame is None:
            packets += self.stream.encode(None)
        return packets

    def _resample(self, frame: AudioFrame | None) -> list[AudioFrame]:
        if frame is None:
            return self.resampler.resample(None) if self.resampler is not None else []
        shape = (frame.format.name, frame.layout.name, frame.sample_rate)
        drained: list[AudioFrame] = []
        if shape != self.input_format:
            drained = self.resampler.resample(None) if self.resampler is not None else []
            self.resampler = AudioResampler(format="fltp", layout=self.layout, rate=self.rate)
            self.input_format = shape
        return drained + self.resampler.resample(frame)

    def _timed(self, frame: AudioFrame) -> AudioFrame:
        frame.pts, frame.time_base = self.samples, Fraction(1, self.rate)
        self.samples += frame.samples
        return frame


class AudioInput:
    """The kept audio track: its packets copied to every output, or decoded once and encoded by each."""

    def __init__(self, stream: AudioStream | None, copy: bool = True) -> None:
        self.stream = stream
        self.copied = copy and stream is not None and stream.codec_context.name in AUDIO_COPIED
        self.retimer = Retimer()  # once for all outputs: they share the packets

    def feed(self, packet: Packet | None, outputs: list[Mp4Output]) -> None:
        if self.stream is None:
            return
        if self.copied:
            ready = self.retimer.push(packet) if packet is not None else self.retimer.flush()
            for output in outputs:
                for copied in ready:
                    output.mux_audio(copied)
            return
        frames = decode(self.stream.codec_context, packet)
        for output in outputs:
            for frame in frames:
                output.encode_audio(frame)
            if packet is None:
                output.encode_audio(None)


class Rendition:
    """An H.264 MP4 made from the decoded frames: scaled (+ turned upright, + HDR tone-mapped to BT.709 SDR)
    by one libavfilter graph into libx264, opened on the first frame. The 720p variant, or the main file when
    the upload cannot be copied (`long_side` the source's own)."""

    def __init__(self, path: Path, source: VideoStream, audio: AudioInput, encoding: Encoding) -> None:
        self.mp4 = Mp4Output(path, None, audio)
        self.path = path
        self.source = source
        self.encoding = encoding
        self.graph: av.filter.Graph | None = None
        self.stream: VideoStream | None = None
        self.size = (0, 0)
        self.last_pts: int | None = None
        self.strip = BitStreamFilterContext(_STRIP_ENCODED_SEI, "h264")  # x264 emits Annex B here

    def encode(self, frame: VideoFrame) -> None:
        if self.graph is None:
            self._open(frame)
        # x264 wants increasing times; a duplicated decode time (a first sample of duration 0) repeats one.
        if frame.pts is None or (self.last_pts is not None and frame.pts <= self.last_pts):
            frame.pts = (self.last_pts or 0) + 1 if self.last_pts is not None else 0
        self.last_pts = frame.pts
        self.graph.vpush(frame)
        self._drain()

    def finish(self) -> None:
        if self.graph is not None:
            self.graph.vpush(None)
            self._drain()
            self.mp4.mux(self._encode(None))
        self.mp4.close()

    def _drain(self) -> None:
        while True:
            try:
                scaled = self.graph.vpull()
            except (av.error.BlockingIOError, av.error.EOFError):
                return
            self.mp4.mux(self._encode(scaled))

    def _encode(self, frame: VideoFrame | None) -> list[Packet]:
        try:
            packets = self.stream.encode(frame)
        except av.error.MemoryError:
            raise
        except av.FFmpegError as exc:
            # libx264 fails on a well-formed frame only when an allocation fails (FFmpeg reports it as a
            # "generic error"): a memory verdict (`too_large_to_process`), not a crash to retry.
            raise MemoryError(f"x264 could not encode a frame: {exc}") from exc
        # x264 writes its version and settings as user data SEI into the first frame: none is stored.
        unsealed = [p for packet in packets for p in self.strip.filter(packet)]
        return unsealed + (self.strip.filter(None) if frame is None else [])

    def _open(self, frame: VideoFrame) -> None:
        rotation = quarter_turns(frame)
        upright = upright_size(frame.width, frame.height, rotation)
        self.size = rendition_size(*upright, self.encoding.long_side)
        scaled = upright_size(*self.size, rotation)  # the scaler works before the turn
        time_base = self.source.time_base or Fraction(1, 90_000)
        graph = av.filter.Graph()
        graph.threads = self.encoding.threads
        buffer = graph.add_buffer(
            width=frame.width, height=frame.height, format=frame.format, time_base=time_base
        )
        chain = [buffer, *self._picture_filters(graph, frame, scaled)]
        for turn in filter(None, _UPRIGHT_FILTERS.get(rotation, "").split(",")):
            name, _, args = turn.partition("=")
            chain.append(graph.add(name, args or None))
        chain.append(graph.add("buffersink"))
        graph.link_nodes(*chain).configure()
        self.path.with_suffix(".cube").unlink(missing_ok=True)  # read by lut3d as it was configured
        self.graph = graph
        self._open_encoder(frame, time_base)

    def _picture_filters(
        self, graph: av.filter.Graph, frame: VideoFrame, size: tuple[int, int]
    ) -> list[av.filter.context.FilterContext]:
        if not is_hdr(frame.color_trc):
            return [graph.add("scale", f"{size[0]}:{size[1]}"), graph.add("format", "yuv420p")]
        lut = write_lut(self.path.with_suffix(".cube"), frame.color_trc)
        tagged = "color_primaries=bt709:color_trc=bt709:colorspace=bt709:range=limited"
        return [
            *sdr_filters(graph, size, lut),
            graph.add("scale", "out_color_matrix=bt709:out_range=limited"),
            graph.add("setparams", tagged),
            graph.add("format", "yuv420p"),
        ]

    def _open_encoder(self, frame: VideoFrame, time_base: Fraction) -> None:
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
        if is_hdr(frame.color_trc):
            for tag in ("color_primaries", "color_trc", "colorspace"):
                setattr(stream.codec_context, tag, _BT709)
            stream.codec_context.color_range = _LIMITED_RANGE
        else:
            for tag in ("color_range", "color_primaries", "color_trc", "colorspace"):
                setattr(stream.codec_context, tag, getattr(frame, tag))
        self.stream = stream
        self.mp4.video_ready(stream)


def sdr_filters(
    graph: av.filter.Graph, size: tuple[int, int], lut: Path
) -> list[av.filter.context.FilterContext]:
    """Scale an HDR (BT.2020, PQ or HLG) frame to `size` as 16-bit RGB (swscale, the BT.2020 matrix) and map
    it to BT.709 SDR R'G'B' through `lut` (`video_tonemap`)."""
    width, height = size
    return [
        graph.add("scale", f"{width}:{height}:in_color_matrix=bt2020:in_range=auto:out_range=full"),
        graph.add("format", "gbrp16le"),
        graph.add("lut3d", f"file={lut}:interp=tetrahedral"),
    ]


def sdr_picture(frame: VideoFrame, workdir: Path) -> Image.Image:
    """An HDR frame as the RGB picture an SDR screen should show (the poster of an HDR video)."""
    lut = write_lut(workdir / "poster.cube", frame.color_trc)
    graph = av.filter.Graph()
    buffer = graph.add_buffer(
        width=frame.width, height=frame.height, format=frame.format, time_base=Fraction(1, 90_000)
    )
    size = (frame.width, frame.height)
    rgb = [graph.add("format", "rgb24"), graph.add("buffersink")]
    graph.link_nodes(buffer, *sdr_filters(graph, size, lut), *rgb).configure()
    lut.unlink(missing_ok=True)
    graph.vpush(frame)
    return graph.vpull().to_image()
