"""Small videos for the video tests, made with PyAV in a few milliseconds each.

Frames are two-tone, red above and blue below, so a test can tell from any output frame or poster whether it
is upright. Sizes stay small; only what a test is about (a codec, a rotation, a duration, a size) is real.
"""

from __future__ import annotations

from fractions import Fraction
from pathlib import Path

import av
from PIL import Image

RED, BLUE = (230, 20, 20), (20, 20, 230)
# Where phones say the video was recorded: ISO 6709, as in QuickTime's ©xyz atom and Apple's mdta key.
LOCATION = "+48.8583+002.2945+035.000/"
APPLE_LOCATION_KEY = "com.apple.quicktime.location.ISO6709"
_FAST = {
    "libx264": {"preset": "ultrafast"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=none"},
}


def two_tone(width: int, height: int) -> Image.Image:
    picture = Image.new("RGB", (width, height), RED)
    picture.paste(BLUE, (0, height // 2, width, height))
    return picture


def clip(
    path: Path,
    *,
    codec: str = "libx264",
    size: tuple[int, int] = (320, 240),
    seconds: float = 1.5,
    fps: Fraction | int = 30,
    rotation: int | None = None,
    audio: str | None = None,
    container: str = "mp4",
    metadata: dict[str, str] | None = None,
    options: dict[str, str] | None = None,
    picture: Image.Image | None = None,
    encoder: dict[str, str] | None = None,
    frame_times: list[int] | None = None,
) -> Path:
    """Write a clip of `picture` (default: two-tone at `size`) to `path`: `codec` video (with a display matrix
    turning it `rotation` degrees counter-clockwise), `audio` ("aac", "pcm_s16le" or None), container-level
    `metadata` tags. `encoder`: the codec's options (default: fastest, no B-frames); `frame_times`: each
    frame's pts in 1/`fps` (default 0, 1, 2, ...)."""
    picture = picture or two_tone(*size)
    size = picture.size
    with av.open(str(path), "w", format=container, options=options or {}) as out:
        out.metadata.update(metadata or {})
        video = out.add_stream(codec, rate=fps, options=encoder or _FAST.get(codec, {}))
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        if rotation is not None:
            video.set_display_rotation(rotation)
        sound = out.add_stream(audio, rate=48_000, layout="mono") if audio else None
        frame = av.VideoFrame.from_image(picture).reformat(format="yuv420p")
        frames = max(1, round(seconds * fps))
        for pts in frame_times or range(frames):
            frame.pts = pts
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            _silence(out, sound, frames / fps)
    return path


def _silence(out: av.container.OutputContainer, stream: av.audio.stream.AudioStream, seconds: float) -> None:
    fmt = "fltp" if stream.codec_context.name == "aac" else "s16"
    samples = 1024
    for start in range(0, int(seconds * 48_000), samples):
        frame = av.AudioFrame(format=fmt, layout="mono", samples=samples)
        frame.sample_rate = 48_000
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        frame.pts = start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def audio_only(path: Path) -> Path:
    """An MP4 with a sound track and nothing else (a voice memo sent as video/mp4)."""
    with av.open(str(path), "w", format="mp4") as out:
        _silence(out, out.add_stream("aac", rate=48_000, layout="mono"), 1.0)
    return path


def truncated(source: Path, path: Path) -> Path:
    """The first half of `source`: an upload cut off mid-transfer."""
    data = source.read_bytes()
    path.write_bytes(data[: len(data) // 2])
    return path


def jpeg(path: Path) -> Path:
    two_tone(64, 64).save(path, "JPEG")
    return path


def boxes(path: Path) -> list[bytes]:
    """The types of the file's top-level boxes, in order (b"ftyp", b"moov", b"mdat", ...)."""
    data, offset, found = path.read_bytes(), 0, []
    while offset + 8 <= len(data):
        size = int.from_bytes(data[offset : offset + 4], "big")
        found.append(data[offset + 4 : offset + 8])
        if size == 1:
            size = int.from_bytes(data[offset + 8 : offset + 16], "big")
        if size < 8:
            break
        offset += size
    return found


# --- what phones write that FFmpeg reads back oddly --------------------------------------------------------

# B-frames: three in a row, as phone encoders use them.
B_FRAMES = {
    "libx264": {"preset": "veryfast"},
    "libx265": {"preset": "ultrafast", "x265-params": "log-level=none:bframes=3"},
}


def reordered_short_clip(path: Path, codec: str = "libx265") -> Path:
    """Five frames with B-frames in QuickTime with negative composition offsets, as an iPhone writes HDR and
    spatial clips: FFmpeg's demuxer leaves the last two `ctts` entries out of its decode-time shift, so it
    reads back a packet shown (pts 512) before it is decoded (dts 1536)."""
    return clip(
        path,
        codec=codec,
        container="mov",
        seconds=5 / 30,
        audio="aac",
        encoder=B_FRAMES[codec],
        options={"movflags": "negative_cts_offsets"},
    )


def zero_first_sample_duration(path: Path, codec: str = "libx264") -> Path:
    """A clip whose first `stts` delta is 0 (some phones' first sample): its first two packets share one
    decode time. Written with a first frame twice as long, then that first entry's delta set to 0."""
    frames = [0, *range(2, 31)]
    clip(path, codec=codec, encoder=B_FRAMES[codec], frame_times=frames, audio="aac")
    data = bytearray(path.read_bytes())
    stts = data.index(b"stts", data.index(b"vide"))  # the video track's sample table
    entries = int.from_bytes(data[stts + 8 : stts + 12], "big")
    first_count = int.from_bytes(data[stts + 12 : stts + 16], "big")
    assert entries >= 2 and first_count == 1, (entries, first_count)
    data[stts + 16 : stts + 20] = bytes(4)
    path.write_bytes(data)
    return path


def unknown_codec(source: Path, path: Path, fourcc: bytes = b"dav1") -> Path:
    """`source` with its video sample entry renamed `fourcc`: a codec this FFmpeg has no id for (Dolby
    Vision AV1 is `dav1`)."""
    data = bytearray(source.read_bytes())
    entry = data.index(b"avc1", data.index(b"stsd"))
    data[entry : entry + 4] = fourcc
    path.write_bytes(data)
    return path


def with_user_data_sei(source: Path, path: Path, text: str) -> Path:
    """`source` remuxed with an SEI "user data unregistered" message carrying `text` (a location, say) in
    front of every video packet, as H.264 or HEVC NAL units."""
    with av.open(str(source)) as inp:
        codec = inp.streams.video[0].codec_context.name
    return with_prefix(source, path, _length_prefixed(_user_data_sei(codec, text.encode())))


def with_prefix(source: Path, path: Path, prefix: bytes, suffix: bytes = b"") -> Path:
    """`source` remuxed with `prefix` in front of every video packet's bytes (and `suffix` behind)."""
    with av.open(str(source)) as inp, av.open(str(path), "w", format="mp4") as out:
        video = inp.streams.video[0]
        copied = out.add_stream_from_template(video)
        for packet in inp.demux(video):
            if not packet.size:
                continue
            marked = av.Packet(prefix + bytes(packet) + suffix)
            marked.pts, marked.dts, marked.time_base = packet.pts, packet.dts, packet.time_base
            marked.is_keyframe = packet.is_keyframe
            marked.stream = copied
            out.mux(marked)
    return path


_SEI_UUID = bytes(range(0x11, 0x21))  # any 16 bytes; none zero, so no emulation prevention is needed


def _user_data_sei(codec: str, payload: bytes) -> bytes:
    header = b"\x06" if codec == "h264" else b"\x4e\x01"  # H.264 SEI; HEVC prefix SEI (type 39), layer 0
    body = _SEI_UUID + payload
    assert len(body) < 255 and b"\x00" not in body
    return header + bytes([5, len(body)]) + body + b"\x80"  # payload type 5: user data unregistered


def _length_prefixed(nal: bytes) -> bytes:
    return len(nal).to_bytes(4, "big") + nal


def nal_units(packet: bytes) -> list[bytes]:
    """The NAL units of an MP4 video packet (4-byte lengths, as FFmpeg's muxer writes H.264 and HEVC)."""
    units, offset = [], 0
    while offset + 4 <= len(packet):
        size = int.from_bytes(packet[offset : offset + 4], "big")
        units.append(packet[offset + 4 : offset + 4 + size])
        offset += 4 + size
    return units


def sei_units(path: Path) -> list[bytes]:
    """Every SEI NAL unit in the first video track of `path` (H.264 type 6, HEVC types 39 and 40)."""
    with av.open(str(path)) as container:
        codec = container.streams.video[0].codec_context.name
        found = []
        for packet in container.demux(video=0):
            for unit in nal_units(bytes(packet)):
                kind = unit[0] & 0x1F if codec == "h264" else (unit[0] >> 1) & 0x3F
                if (codec == "h264" and kind == 6) or (codec == "hevc" and kind in (39, 40)):
                    found.append(unit)
    return found


def mp3_changing_format(path: Path, seconds: float = 1.0) -> Path:
    """A video whose MP3 sound changes format halfway, as concatenated recordings do: 44.1 kHz mono, then
    48 kHz stereo. Two MP3 encodings, their packets muxed into one track (each MP3 frame says its own format)."""
    halves = [_mp3_packets(44_100, "mono", seconds / 2), _mp3_packets(48_000, "stereo", seconds / 2)]
    with av.open(str(path), "w", format="mov") as out:
        video = out.add_stream("libx264", rate=30, options=_FAST["libx264"])
        video.width, video.height, video.pix_fmt = 64, 64, "yuv420p"
        sound = out.add_stream("libmp3lame", rate=44_100, layout="mono")
        frame = av.VideoFrame.from_image(two_tone(64, 64)).reformat(format="yuv420p")
        for index in range(round(seconds * 30)):
            frame.pts = index
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        start = 0
        for packets in halves:
            for data, duration, rate in packets:
                packet = av.Packet(data)
                packet.pts = packet.dts = start
                packet.duration = round(duration * 44_100 / rate)
                packet.time_base = Fraction(1, 44_100)
                packet.stream = sound
                out.mux(packet)
                start += packet.duration
    return path


def _mp3_packets(rate: int, layout: str, seconds: float) -> list[tuple[bytes, int, int]]:
    """(data, duration in samples, rate) of an MP3 encoding of a tone."""
    encoder = av.CodecContext.create("libmp3lame", "w")
    encoder.sample_rate, encoder.layout, encoder.format = rate, layout, "s16p"
    encoder.time_base = Fraction(1, rate)
    encoder.open()
    packets, samples = [], 1152
    for start in range(0, int(seconds * rate), samples):
        frame = av.AudioFrame(format="s16p", layout=layout, samples=samples)
        frame.sample_rate, frame.pts = rate, start
        for plane in frame.planes:
            plane.update(bytes(plane.buffer_size))
        packets += [(bytes(p), p.duration or samples, rate) for p in encoder.encode(frame)]
    packets += [(bytes(p), p.duration or samples, rate) for p in encoder.encode(None)]
    return packets


def late_negative_offset(path: Path) -> Path:
    """A 60-frame H.264 clip whose last frame is shown 20 frames before it is decoded, far past the reordering
    of the packets before it (FFmpeg leaves the last `ctts` entries out of its shift): its packets cannot be
    copied as they are."""
    options = {"movflags": "negative_cts_offsets"}
    clip(path, container="mov", seconds=2, encoder=B_FRAMES["libx264"], options=options)
    data = bytearray(path.read_bytes())
    ctts = data.index(b"ctts")
    entries = int.from_bytes(data[ctts + 8 : ctts + 12], "big")
    last = ctts + 12 + (entries - 1) * 8
    data[last + 4 : last + 8] = (-20 * 512).to_bytes(4, "big", signed=True)  # 512: 1/30 s in 1/15360
    path.write_bytes(data)
    return path


def hdr_clip(path: Path, transfer: int, level: float, size: tuple[int, int] = (320, 180)) -> Path:
    """Ten frames of one grey at signal `level` (0..1) in 10-bit HEVC, BT.2020, tagged with `transfer` (FFmpeg's
    color_trc: 16 PQ, 18 HLG), as an HDR phone clip is tagged."""
    grey = round(level * 255)
    frame = av.VideoFrame.from_image(Image.new("RGB", size, (grey, grey, grey)))
    frame = frame.reformat(format="yuv420p10le")
    with av.open(str(path), "w", format="mp4") as out:
        video = out.add_stream("libx265", rate=30, options=_FAST["libx265"])
        video.width, video.height, video.pix_fmt = *size, "yuv420p10le"
        context = video.codec_context
        context.color_primaries, context.colorspace, context.color_trc = 9, 9, transfer  # BT.2020, 2020 NCL
        context.color_range = 1  # limited
        for index in range(10):
            frame.pts = index
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
    return path
