"""Crafted and worst-case images: the image stage today against the stage before its limits.

Run from the repository root:

    .venv/bin/python -m bench.hostile [--json] [--no-check]

Each file is made here, deterministically (`tests/images.py`), and cached under bench/out/. Each
(contestant, file) pair runs in a fresh interpreter, so its peak RSS (ru_maxrss) is its own:

- `before`: the stage as it was before the hardening — Pillow's plugins decode the whole image, alpha is
  flattened at full size, then resized; no structure checks, no memory model. Capped at 60 s of wall time.
- `stage`: `process_image` with the default rules and the worker's default memory budget, as the worker
  runs it (the worker also runs it under RLIMIT_CPU/RLIMIT_DATA in a child, see `workers/sandbox.py`).

Target (exit status 1 when missed, unless --no-check): the stage's peak RSS at most 300 MB on every file,
and every file either processed or refused with a stable code.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
import time
from collections.abc import Callable
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))

OUT_DIR = REPO / "bench" / "out" / "hostile"
MAX_STAGE_RSS_MB = 300.0
BEFORE_TIMEOUT_S = 60.0


def _files() -> dict[str, tuple[str, Callable[[], bytes]]]:
    from tests import images

    return {
        "repeated-scan JPEG 2000x2000 +300 scans": (
            "image/jpeg",
            lambda: images.repeated_scan_jpeg(2000, 300),
        ),
        "1.3 M COM markers JPEG": ("image/jpeg", lambda: images.comment_flood_jpeg(1_300_000)),
        "437 k chunks PNG": ("image/png", lambda: images.chunk_flood_png(437_000)),
        "16-bit RGBA PNG 7071x7071": ("image/png", lambda: images.rgba16_png(7071, 7071)),
        "RGBA HEIC 6000x6000": ("image/heic", lambda: images.rgba_image(6000, 6000, "HEIF", quality=50)),
        "RGBA HEIC 7071x7071": ("image/heic", lambda: images.rgba_image(7071, 7071, "HEIF", quality=50)),
        "lossless RGBA WebP 3850x3850": (
            "image/webp",
            lambda: images.rgba_image(3850, 3850, "WEBP", lossless=True),
        ),
        "lossless RGBA WebP 7071x7071": (
            "image/webp",
            lambda: images.rgba_image(7071, 7071, "WEBP", lossless=True),
        ),
        "lossy RGBA WebP 7071x7071": (
            "image/webp",
            lambda: images.rgba_image(7071, 7071, "WEBP", quality=80),
        ),
        "12 MP photo JPEG": ("image/jpeg", lambda: images.jpeg(4000, 3000)),
    }


def _materialise(name: str, make: Callable[[], bytes]) -> Path:
    import workers.stages.image  # noqa: F401 - registers the HEIF encoder the generator saves with

    path = OUT_DIR / (name.replace(" ", "_") + ".bin")
    if not path.exists():
        OUT_DIR.mkdir(parents=True, exist_ok=True)
        path.write_bytes(make())
    return path


# --- one measurement, in its own interpreter --------------------------------------------------------------


def _before(path: Path, mime: str) -> str:
    """The stage's decode path before the hardening, rebuilt from its parts."""
    from PIL import Image

    from workers.stages import image as stage

    with Image.open(path, formats=[stage.DECODERS[mime]]) as img:
        img.load()
        small = stage._resample(stage._flatten(img), stage._fit(img.size, 1200))
    return f"ready {small.width}x{small.height}"


def _stage(path: Path, mime: str) -> str:
    from app.config import Settings
    from app.domain.rejections import Rejected
    from workers.stages.image import ImageRules, process_image

    settings = Settings()
    rules = ImageRules(max_pixels=settings.max_image_pixels, memory_bytes=settings.image_memory_bytes)
    try:
        out = process_image(path, mime, rules)
    except Rejected as rejected:
        return f"rejected {rejected.code.value}"
    return f"ready {out.width}x{out.height}"


def _measure(contestant: str, path: Path, mime: str) -> None:
    started = time.monotonic()
    outcome = {"before": _before, "stage": _stage}[contestant](path, mime)
    # VmHWM, not ru_maxrss: the latter survives exec, so it would count the parent that made the files.
    status = Path("/proc/self/status").read_text().splitlines()
    peak = next(int(line.split()[1]) for line in status if line.startswith("VmHWM:")) / 1024
    print(json.dumps({"outcome": outcome, "seconds": time.monotonic() - started, "rss_mb": peak}))


def _run(contestant: str, path: Path, mime: str) -> dict[str, object]:
    argv = [sys.executable, "-m", "bench.hostile", "--measure", contestant, str(path), mime]
    try:
        done = subprocess.run(argv, cwd=REPO, capture_output=True, text=True, timeout=BEFORE_TIMEOUT_S)
    except subprocess.TimeoutExpired:
        return {"outcome": f"still decoding after {BEFORE_TIMEOUT_S:.0f} s", "seconds": None, "rss_mb": None}
    if done.returncode != 0:
        last = (done.stderr.strip().splitlines() or ["?"])[-1]
        return {"outcome": f"error: {last[:60]}", "seconds": None, "rss_mb": None}
    return json.loads(done.stdout.strip().splitlines()[-1])


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--no-check", action="store_true", help="exit 0 even when a target is missed")
    parser.add_argument("--measure", nargs=3, metavar=("CONTESTANT", "PATH", "MIME"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        contestant, path, mime = args.measure
        _measure(contestant, Path(path), mime)
        return 0

    rows = []
    for name, (mime, make) in _files().items():
        path = _materialise(name, make)
        rows.append(
            {
                "file": name,
                "bytes": path.stat().st_size,
                "before": _run("before", path, mime),
                "stage": _run("stage", path, mime),
            }
        )
    missed = [
        row["file"]
        for row in rows
        if row["stage"]["rss_mb"] is None or row["stage"]["rss_mb"] > MAX_STAGE_RSS_MB  # type: ignore[operator]
    ]
    if args.json:
        print(json.dumps({"rows": rows, "missed": missed}, indent=2))
    else:
        _print_table(rows)
        print(
            f"target: stage peak RSS <= {MAX_STAGE_RSS_MB:.0f} MB on every file: {'MISSED ' + str(missed) if missed else 'met'}"
        )
    return 1 if missed and not args.no_check else 0


def _cell(result: dict[str, object]) -> str:
    rss = f"{result['rss_mb']:.0f} MB" if result["rss_mb"] is not None else "-"
    seconds = f"{result['seconds']:.2f} s" if result["seconds"] is not None else "-"
    return f"{result['outcome']}, {seconds}, {rss}"


def _print_table(rows: list[dict[str, object]]) -> None:
    print("| file | bytes | before: outcome, time, peak RSS | stage: outcome, time, peak RSS |")
    print("|---|---|---|---|")
    for row in rows:
        print(f"| {row['file']} | {row['bytes']:,} | {_cell(row['before'])} | {_cell(row['stage'])} |")  # type: ignore[arg-type]


if __name__ == "__main__":
    sys.exit(main())
