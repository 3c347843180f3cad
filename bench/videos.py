"""The video stage against the ffmpeg command line making the same three outputs from one 1080p phone-like clip.

Run from the repository root (Debian: `apt-get install -y ffmpeg` first):

    .venv/bin/python -m bench.videos [--rounds N] [--large] [--no-check]

Both contestants make the same files from the same clip: the main file remuxed with `faststart` and no
metadata, a 720p H.264 + AAC rendition (libx264, the stage's preset, CRF and thread count on both sides),
and a poster frame 1 s in. The stage runs as the worker runs it: `workers.processing.video.process` in a fresh
Python process, which forks the limited child (`workers.sandbox.run_limited`) that does the work. ffmpeg runs
as one command with three outputs, decoding the video once, as the stage does.

Each run is its own process tree: its wall time is taken around it, its CPU time and peak RSS come from
`wait4()`, whose ru_maxrss is the largest of the process and its waited-for descendants (the stage's limited
child). Rounds alternate the contestants so a noisy neighbour slows both; medians are reported.

The clip (60 s of 1920x1080 at 30 fps, H.264 High at ~16 Mb/s with grain, AAC stereo: what a phone
records) is made once with ffmpeg and cached under var/bench/. `--large` adds a ~500 MB clip (250 s), outside
CI, to show that memory does not grow with the input.

Targets (exit status 1 when one is missed, unless --no-check): the stage's median wall time at most 1.1x
ffmpeg's, its peak RSS at most 150 MB on every input.
"""

from __future__ import annotations

import argparse
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/videos.py` puts bench/ on the path, not the repository
    sys.path.insert(0, str(REPO))

from workers.processing.video import (  # noqa: E402
    RENDITION_CRF,
    RENDITION_PRESET,
    RENDITION_X264_PARAMS,
    THREADS,
    VideoRules,
)
from workers.processing.video_encode import rendition_size  # noqa: E402
from workers.processing.video_render import POSTER_SECONDS  # noqa: E402

CACHE = REPO / "var" / "bench"
WIDTH, HEIGHT, FPS, BIT_RATE = 1920, 1080, 30, "16M"
CLIPS = {"60s": 60, "large": 250}  # seconds; at 16 Mb/s the large one is ~500 MB
MAX_TIME_RATIO = 1.1
MAX_RSS_MB = 150.0


@dataclass(frozen=True)
class Run:
    seconds: float
    cpu_seconds: float
    peak_rss_mb: float
    rendition_bytes: int


def make_clip(seconds: int) -> Path:
    """A deterministic phone-like clip: moving test pattern with temporal grain (so it costs what a real
    scene costs to decode), a tone on the sound track, and location metadata like a phone's."""
    path = CACHE / f"clip-{WIDTH}x{HEIGHT}-{FPS}fps-{seconds}s-{BIT_RATE}.mp4"
    if path.exists():
        return path
    CACHE.mkdir(parents=True, exist_ok=True)
    print(f"making {path.name} (once; cached) ...", flush=True)
    partial = path.with_suffix(".partial.mp4")
    video = f"testsrc2=size={WIDTH}x{HEIGHT}:rate={FPS},noise=alls=10:allf=t+u"
    subprocess.run(
        ["ffmpeg", "-v", "error", "-y", "-f", "lavfi", "-i", video, "-f", "lavfi",
         "-i", "sine=frequency=440:sample_rate=48000", "-t", str(seconds),
         "-c:v", "libx264", "-preset", "veryfast" if seconds <= 60 else "ultrafast", "-profile:v", "high",
         "-b:v", BIT_RATE, "-maxrate", "20M", "-bufsize", "20M", "-pix_fmt", "yuv420p",
         "-c:a", "aac", "-b:a", "128k", "-ac", "2",
         "-metadata", "location=+48.8583+002.2945/", str(partial)],
        check=True,
    )  # fmt: skip
    partial.rename(path)
    return path


def ffmpeg_command(source: Path, out: Path) -> list[str]:
    """ffmpeg making the stage's three outputs, with the stage's encoder settings and thread count."""
    rules = VideoRules()
    width, height = rendition_size(WIDTH, HEIGHT, rules.rendition_long_side)
    edge = rules.poster.max_edge
    threads = str(THREADS)
    return [
        "ffmpeg", "-v", "error", "-y", "-threads", threads, "-i", str(source), "-filter_threads", threads,
        # main: streams copied, no metadata, faststart
        "-map", "0:v:0", "-map", "0:a:0?", "-c", "copy", "-map_metadata", "-1",
        "-movflags", "+faststart", "-fflags", "+bitexact", str(out / "video.mp4"),
        # 720p: the stage's x264 settings; AAC copied as the stage copies it
        "-map", "0:v:0", "-map", "0:a:0?", "-vf", f"scale={width}:{height}", "-pix_fmt", "yuv420p",
        "-c:v", "libx264", "-preset", RENDITION_PRESET, "-crf", str(RENDITION_CRF),
        "-x264-params", RENDITION_X264_PARAMS, "-threads", threads,
        "-c:a", "copy", "-map_metadata", "-1", "-movflags", "+faststart", str(out / "720p.mp4"),
        # poster: one frame 1 s in, at most 1200 px
        "-map", "0:v:0", "-ss", str(POSTER_SECONDS), "-frames:v", "1",
        "-vf", f"scale={edge}:{edge}:force_original_aspect_ratio=decrease", "-q:v", "3",
        str(out / "poster.jpg"),
    ]  # fmt: skip


def stage_command(source: Path, out: Path) -> list[str]:
    return [sys.executable, "-m", "bench.videos", "--stage-only", str(source), str(out)]


def run_stage_only(source: Path, out: Path) -> None:
    """The child side of a stage run: the worker's video processor on `source`, outputs in `out`."""
    from app.config import Settings
    from app.domain.kinds import KINDS
    from workers.processing.video import process

    processed = process(source, "video/mp4", KINDS["workout_video"], Settings(), out)
    assert "720p" in processed.variants and "poster" in processed.variants, processed


def measure(command: list[str], out: Path) -> Run:
    shutil.rmtree(out, ignore_errors=True)
    out.mkdir(parents=True)
    started = time.perf_counter()
    process = subprocess.Popen(command, cwd=REPO)
    _, status, usage = os.wait4(process.pid, 0)
    seconds = time.perf_counter() - started
    process.returncode = os.waitstatus_to_exitcode(status)
    if process.returncode != 0:
        raise SystemExit(f"{command[0]} failed with status {process.returncode}")
    return Run(
        seconds,
        usage.ru_utime + usage.ru_stime,
        usage.ru_maxrss / 1024,  # KiB on Linux
        (out / "720p.mp4").stat().st_size,
    )


def bench(source: Path, rounds: int, scratch: Path) -> dict[str, list[Run]]:
    contestants = {"stage": stage_command, "ffmpeg": ffmpeg_command}
    runs: dict[str, list[Run]] = {name: [] for name in contestants}
    for round_no in range(rounds):
        order = list(contestants) if round_no % 2 == 0 else list(reversed(contestants))
        for name in order:
            runs[name].append(measure(contestants[name](source, scratch / name), scratch / name))
            print(f"  round {round_no + 1}: {name} {runs[name][-1].seconds:.1f} s", flush=True)
    return runs


def report(label: str, source: Path, runs: dict[str, list[Run]]) -> list[str]:
    """Prints the table; returns the targets missed."""
    median = {name: _median(rs) for name, rs in runs.items()}
    stage, ffmpeg = median["stage"], median["ffmpeg"]
    size_mb = source.stat().st_size / 1e6
    print(f"\n{label}: {source.name} ({size_mb:.0f} MB), medians of {len(runs['stage'])} rounds")
    print(f"{'':8} {'wall s':>8} {'CPU s':>8} {'peak RSS MB':>12} {'720p MB':>8}")
    for name, run in median.items():
        print(
            f"{name:8} {run.seconds:8.1f} {run.cpu_seconds:8.1f} {run.peak_rss_mb:12.0f} "
            f"{run.rendition_bytes / 1e6:8.1f}"
        )
    time_ratio = stage.seconds / ffmpeg.seconds
    print(
        f"stage/ffmpeg: time {time_ratio:.2f}x (target <= {MAX_TIME_RATIO}x), "
        f"RSS {stage.peak_rss_mb / ffmpeg.peak_rss_mb:.2f}x; stage peak RSS {stage.peak_rss_mb:.0f} MB "
        f"(target <= {MAX_RSS_MB:.0f} MB)"
    )
    missed = []
    if time_ratio > MAX_TIME_RATIO:
        missed.append(f"{label}: time {time_ratio:.2f}x ffmpeg > {MAX_TIME_RATIO}x")
    if stage.peak_rss_mb > MAX_RSS_MB:
        missed.append(f"{label}: peak RSS {stage.peak_rss_mb:.0f} MB > {MAX_RSS_MB:.0f} MB")
    return missed


def _median(runs: list[Run]) -> Run:
    return Run(
        statistics.median(r.seconds for r in runs),
        statistics.median(r.cpu_seconds for r in runs),
        statistics.median(r.peak_rss_mb for r in runs),
        int(statistics.median(r.rendition_bytes for r in runs)),
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--large", action="store_true", help="also a ~500 MB clip (cached; not for CI)")
    parser.add_argument("--no-check", action="store_true", help="exit 0 even when a target is missed")
    parser.add_argument("--stage-only", nargs=2, metavar=("SOURCE", "OUT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.stage_only:
        run_stage_only(Path(args.stage_only[0]), Path(args.stage_only[1]))
        return 0
    if shutil.which("ffmpeg") is None:
        print(
            "bench.videos needs the ffmpeg command line (Debian: apt-get install -y ffmpeg)", file=sys.stderr
        )
        return 2
    clips = {"60s": make_clip(CLIPS["60s"])}
    if args.large:
        clips["large"] = make_clip(CLIPS["large"])
    missed: list[str] = []
    with tempfile.TemporaryDirectory(prefix="bench-videos-") as scratch:
        for label, clip in clips.items():
            rounds = args.rounds if label == "60s" else 1
            missed += report(label, clip, bench(clip, rounds, Path(scratch)))
    for line in missed:
        print(f"MISSED {line}", file=sys.stderr)
    return 1 if missed and not args.no_check else 0


if __name__ == "__main__":
    sys.exit(main())
