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
) -> Path:
    """Write a clip of `picture` (default: two-tone at `size`) to `path`: `codec` video (with a display matrix
    turning it `rotation` degrees counter-clockwise), `audio` ("aac", "pcm_s16le" or None), container-level
    `metadata` tags."""
    picture = picture or two_tone(*size)
    size = picture.size
    with av.open(str(path), "w", format=container, options=options or {}) as out:
        out.metadata.update(metadata or {})
        video = out.add_stream(codec, rate=fps, options=_FAST.get(codec, {}))
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        if rotation is not None:
            video.set_display_rotation(rotation)
        sound = out.add_stream(audio, rate=48_000, layout="mono") if audio else None
        frame = av.VideoFrame.from_image(picture).reformat(format="yuv420p")
        frames = max(1, round(seconds * fps))
        for index in range(frames):
            frame.pts = index
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
