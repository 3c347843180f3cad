"""The video processor: a phone video becomes a metadata-free MP4, a poster and, where needed, a 720p H.264.

In the order DESIGN.md gives ("Video processing"), all inside one limited child process (`workers.sandbox`):

1. Probe (`video_probe`): the first box must be MP4/QuickTime (`type_mismatch`); only FFmpeg's MP4/QuickTime
   demuxer reads the headers (`corrupt` if they do not parse or the samples run past the end of the file);
   then a video track (`no_video_stream`) in an allowed codec (`unsupported_codec`), no longer than the
   kind's limit by any header or the sample table (`video_too_long`), no frame over 3840x2160 in either
   orientation (`video_too_large`). Nothing is decoded before these checks pass.
2. One streaming pass (`video_render`): the main file remuxed (packets copied, not re-encoded) with
   `faststart` and no metadata but what playback needs; a 720p H.264 + AAC rendition when the source is
   larger than 1280 px or not H.264 (HEVC plays in few browsers); the poster frame about 1 s in. Frame sizes
   and packet times are checked again as they come, so a header that lied ends in the same rejections.
3. The poster goes through the image stage (`workers.stages.image`: at most 1200 px, JPEG q85, no
   metadata) from a lossless PNG of the upright frame.

Sizes are recorded upright (a portrait phone video stores landscape frames and a 90 degree display matrix).
`bench/videos.py` measures the whole processor against the ffmpeg command line doing the same.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

from av.video.frame import VideoFrame

from app.config import Settings
from app.domain.kinds import MediaKind
from workers.processing.outputs import OutputFile, Processed
from workers.processing.video_encode import Encoding
from workers.processing.video_probe import Probe, open_source, probe
from workers.processing.video_remux import NotRemuxable
from workers.processing.video_render import PassLimits, Rendered, render, upright_picture
from workers.sandbox import ProcessLimits
from workers.sandbox_host import run_attempt
from workers.stages.image import ImageRules, write_image

# x264's `veryfast` at CRF 23 (its default quality): a 720p rendition of a 1080p phone clip at ~1.5x real
# time per core and ~1.5 Mb/s for a typical workout scene; `medium` is ~2.5x slower for ~10% fewer bytes.
RENDITION_PRESET = "veryfast"
RENDITION_CRF = 23
# x264's frames in flight are its lookahead: 5 frames instead of veryfast's 10 keep the rendition's memory
# ~25 MB lower (the whole stage under 150 MB on 1080p); on a 1080p phone-like clip the file is ~9% smaller
# for 0.14 dB less SSIM, the same trade as a CRF step of a quarter.
RENDITION_X264_PARAMS = "rc-lookahead=5"
# Decoder, scaler and x264 threads. A worker runs one video at a time on (at least) two cores; "one per core"
# on a big host would multiply the decoder's frame buffers (4K HEVC: ~25 MB each) against the memory limit.
THREADS = 2


@dataclass(frozen=True)
class VideoRules:
    """Limits and outputs for one kind of video; the defaults are the design's."""

    allowed_codecs: frozenset[str] = frozenset({"h264", "hevc"})
    max_duration_seconds: float = 600
    # A frame larger than 3840x2160 in either orientation (4K UHD, the most phones record) is refused.
    max_width: int = 3840
    max_height: int = 2160
    # Pixel-seconds one upload may cost (`MediaKind.max_video_pixel_seconds`); None: only the CPU limit.
    max_pixel_seconds: float | None = None
    rendition_long_side: int = 1280
    poster: ImageRules = field(default_factory=ImageRules)
    preset: str = RENDITION_PRESET
    crf: int = RENDITION_CRF
    x264_params: str = RENDITION_X264_PARAMS
    threads: int = THREADS


def process_video(source: Path, workdir: Path, rules: VideoRules) -> dict[str, Any]:
    """Probe the upload at `source` and write its outputs in `workdir`; the `Processed` as JSON.

    Runs inside `workers.sandbox.run_limited`. Raises `Rejected` for content that must not be promoted. The
    main file is a copy of the upload's packets; when the MP4 muxer refuses them even retimed
    (`NotRemuxable`), a second pass encodes it instead.
    """
    max_frame = (rules.max_width, rules.max_height)
    limits = PassLimits(rules.max_duration_seconds, max_frame, rules.max_pixel_seconds)
    try:
        probed, rendered = _one_pass(source, workdir, rules, limits, remux=True)
    except NotRemuxable:
        for half_written in workdir.glob("*.mp4"):
            half_written.unlink()
        probed, rendered = _one_pass(source, workdir, rules, limits, remux=False)
    poster = _write_poster(rendered.poster, workdir, rules.poster)
    variants = {"poster": poster}
    if rendered.rendition is not None:
        variants["720p"] = OutputFile(workdir / "720p.mp4", "video/mp4", "mp4", *rendered.rendition)
    main = OutputFile(workdir / "video.mp4", "video/mp4", "mp4", rendered.width, rendered.height)
    # The main file's codecs: the video's (copied or encoded); its sound, if any, is AAC (copied or encoded).
    codecs = rendered.main_codec + ("+aac" if probed.audio is not None else "")
    return Processed(main, variants, duration_seconds=rendered.duration_seconds, codecs=codecs).to_json()


def _one_pass(
    source: Path, workdir: Path, rules: VideoRules, limits: PassLimits, remux: bool
) -> tuple[Probe, Rendered]:
    encoding = Encoding(rules.rendition_long_side, rules.preset, rules.crf, rules.x264_params, rules.threads)
    with open_source(source, limits.max_frame) as container:
        probed = probe(
            container,
            source.stat().st_size,
            rules.allowed_codecs,
            limits.max_seconds,
            limits.max_frame,
            limits.max_pixel_seconds,
        )
        return probed, render(container, probed, workdir, encoding, limits, remux)


def rules_for(kind: MediaKind, settings: Settings) -> VideoRules:
    """The kind's video rules: the settings' codecs, the kind's duration limit and processing budget."""
    rules = VideoRules(allowed_codecs=frozenset(settings.video_codecs))
    if kind.max_duration_seconds is not None:
        rules = replace(rules, max_duration_seconds=kind.max_duration_seconds)
    return replace(rules, max_pixel_seconds=kind.max_video_pixel_seconds)


def process(source: Path, mime: str, kind: MediaKind, settings: Settings, workdir: Path) -> Processed:
    """The worker's entry point: `process_video` in a child process under the video limits."""
    limits = ProcessLimits(
        cpu_seconds=settings.video_cpu_seconds,
        memory_bytes=settings.video_memory_bytes,
        attempts_per_process=settings.sandbox_attempts_per_process,
    )
    result = run_attempt(process_video, source, workdir, rules_for(kind, settings), limits=limits)
    return Processed.from_json(result, workdir)


def _write_poster(frame: VideoFrame, workdir: Path, rules: ImageRules) -> OutputFile:
    """The poster frame, upright, through the image rules (at most 1200 px, JPEG q85, no metadata), by way
    of a lossless PNG (fast zlib level: it lives for a moment)."""
    frame_png, output = workdir / "poster-frame.png", workdir / "poster.jpg"
    upright_picture(frame, workdir).save(frame_png, "PNG", compress_level=1)
    try:
        size = write_image(frame_png, "image/png", rules, output)
    finally:
        frame_png.unlink(missing_ok=True)
    return OutputFile(output, "image/jpeg", "jpg", size["width"], size["height"])
