"""Crafted and worst-case images: the image stage today against the stage before its limits.

Run from the repository root:

    .venv/bin/python -m bench.hostile [--json] [--no-check]
    .venv/bin/python -m bench.hostile DIR [DIR ...]   # real files: PDFs and images found there

With directories, every PDF, JPEG, PNG, WebP and HEIC in them (by content, not name) goes through its
processor as the worker runs it (`inspect_pdf`, `process_image`; rules from the default settings), each in a
child forked from one interpreter that has imported them (as the fork server does), with no limits of its own
so its real cost shows: the outcome, CPU seconds and peak RSS per file, the costliest files of each type,
and the worst PDF against the target (at most 5 s CPU and 300 MB). A file that ends with anything but
`ready` or `rejected <code>` (an exception, a signal) is listed as a miss.

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
MAX_PDF_CPU_S = 5.0
BEFORE_TIMEOUT_S = 60.0
CORPUS_TIMEOUT_S = 120.0
_SIGNATURES = ((b"%PDF-", "application/pdf"),)


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


# --- real files, from directories ---------------------------------------------------------------------


def _mime(path: Path) -> str | None:
    """The processor a file goes to, from its bytes: the worker's sniffer, or a PDF header anywhere in the
    first 1024 bytes (where viewers look; the sniffer wants it first)."""
    from app.domain.rejections import Rejected
    from workers.stages.sniff import sniff

    head = path.read_bytes()[:1024]
    if any(signature in head for signature, _ in _SIGNATURES):
        return "application/pdf"
    for declared in ("image/jpeg", "image/png", "image/webp", "image/heic"):
        try:
            return sniff(path, declared)
        except Rejected:  # not this type: try the next
            continue
    return None


def _process_file(path: Path, mime: str, workdir: Path) -> str:
    from app.config import Settings
    from app.domain.rejections import Rejected
    from workers.processing.pdf import PdfRules, inspect_pdf
    from workers.stages.image import ImageRules, process_image

    settings = Settings()
    try:
        if mime == "application/pdf":
            rules = PdfRules(max_pages=settings.pdf_max_pages, max_objects=settings.pdf_max_objects)
            return f"ready {inspect_pdf(path, workdir, rules)['pages']} pages"
        image = ImageRules(max_pixels=settings.max_image_pixels, memory_bytes=settings.image_memory_bytes)
        out = process_image(path, mime, image)
        return f"ready {out.width}x{out.height}"
    except Rejected as rejected:
        return f"rejected {rejected.code.value}"


def _forked(path: Path, mime: str) -> dict[str, object]:
    """One file in a child of this process: its outcome, CPU seconds (all threads) and peak RSS."""
    import os
    import signal
    import tempfile

    read, write = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: answer on the pipe, never return into the parent's code
        os.close(read)
        try:
            with tempfile.TemporaryDirectory() as workdir:
                outcome = _process_file(path, mime, Path(workdir))
        except BaseException as error:  # reported as a miss
            outcome = f"error {type(error).__name__}: {str(error)[:80]}"
        os.write(write, outcome.encode()[:4000])
        os._exit(0)
    os.close(write)
    signal.signal(signal.SIGALRM, lambda *_: os.kill(pid, signal.SIGKILL))
    signal.alarm(int(CORPUS_TIMEOUT_S))
    _, status, usage = os.wait4(pid, 0)
    signal.alarm(0)
    with os.fdopen(read, "rb") as answer:
        outcome = answer.read().decode() or f"no answer (wait status {status})"
    cpu = usage.ru_utime + usage.ru_stime
    return {"outcome": outcome, "seconds": round(cpu, 2), "rss_mb": round(usage.ru_maxrss / 1024, 1)}


def _corpus(directories: list[Path]) -> list[dict[str, object]]:
    import workers.processing  # noqa: F401 - what the fork server preloads: every child inherits it

    rows = []
    for directory in directories:
        for path in sorted(p for p in directory.rglob("*") if p.is_file() and p.stat().st_size > 0):
            mime = _mime(path)
            if mime is not None:
                rows.append(
                    {"file": str(path), "mime": mime, "bytes": path.stat().st_size} | _forked(path, mime)
                )
    return rows


def _report_corpus(rows: list[dict[str, object]], as_json: bool) -> list[str]:
    """Prints the costliest files of each type; returns the misses (crashes, and the worst PDF's cost)."""
    missed = [str(row["file"]) for row in rows if not str(row["outcome"]).startswith(("ready", "rejected"))]
    pdfs = [row for row in rows if row["mime"] == "application/pdf"]
    worst_cpu = max(pdfs, key=lambda row: row["seconds"], default=None)  # type: ignore[arg-type, return-value]
    worst_rss = max(pdfs, key=lambda row: row["rss_mb"], default=None)  # type: ignore[arg-type, return-value]
    if worst_cpu is not None and float(worst_cpu["seconds"]) > MAX_PDF_CPU_S:  # type: ignore[arg-type]
        missed.append(f"{worst_cpu['file']}: {worst_cpu['seconds']} s of CPU")
    if worst_rss is not None and float(worst_rss["rss_mb"]) > MAX_STAGE_RSS_MB:  # type: ignore[arg-type]
        missed.append(f"{worst_rss['file']}: {worst_rss['rss_mb']} MB")
    if as_json:
        print(json.dumps({"rows": rows, "missed": missed}, indent=2))
        return missed
    print("| file | type | bytes | outcome | CPU s | peak RSS MB |")
    print("|---|---|---|---|---|---|")
    for mime in sorted({str(row["mime"]) for row in rows}):
        of_type = [row for row in rows if row["mime"] == mime]
        for row in sorted(of_type, key=lambda row: -float(row["seconds"]))[:5]:  # type: ignore[arg-type]
            name = Path(str(row["file"])).name
            print(
                f"| {name} | {mime} | {row['bytes']:,} | {row['outcome']} | {row['seconds']} | {row['rss_mb']} |"
            )
    outcomes: dict[str, int] = {}
    for row in rows:
        key = f"{row['mime']} {' '.join(str(row['outcome']).split()[:2])}"
        outcomes[key] = outcomes.get(key, 0) + 1
    print("\n" + "\n".join(f"{count:5d}  {key}" for key, count in sorted(outcomes.items())))
    if worst_cpu is not None and worst_rss is not None:
        print(
            f"worst PDF: {worst_cpu['seconds']} s CPU ({Path(str(worst_cpu['file'])).name}), "
            f"{worst_rss['rss_mb']} MB ({Path(str(worst_rss['file'])).name}); target <= {MAX_PDF_CPU_S:g} s, "
            f"<= {MAX_STAGE_RSS_MB:g} MB"
        )
    print(f"misses: {missed if missed else 'none'}")
    return missed


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("directories", nargs="*", type=Path, help="real files to run instead of crafted ones")
    parser.add_argument("--json", action="store_true", help="print the results as JSON")
    parser.add_argument("--no-check", action="store_true", help="exit 0 even when a target is missed")
    parser.add_argument("--measure", nargs=3, metavar=("CONTESTANT", "PATH", "MIME"), help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.measure:
        contestant, path, mime = args.measure
        _measure(contestant, Path(path), mime)
        return 0
    if args.directories:
        missed = _report_corpus(_corpus(args.directories), args.json)
        return 1 if missed and not args.no_check else 0

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
