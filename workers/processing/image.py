"""The image processor: photos and pictures become one upright, metadata-free JPEG of at most 1200 px.

The work itself is `workers.stages.image` (header checks, decode, orientation, resize, encode); here it runs
in a child process under the image limits, and its JPEG is handed back as the main file.
"""

from __future__ import annotations

from pathlib import Path

from app.config import Settings
from app.domain.kinds import MediaKind
from workers.processing.outputs import OutputFile, Processed
from workers.sandbox import ProcessLimits
from workers.sandbox_host import run_attempt
from workers.stages.image import ImageRules, write_image


def process(source: Path, mime: str, kind: MediaKind, settings: Settings, workdir: Path) -> Processed:
    output = workdir / "image.jpg"
    rules = ImageRules(max_pixels=settings.max_image_pixels, memory_bytes=settings.image_memory_bytes)
    limits = ProcessLimits(
        cpu_seconds=settings.image_cpu_seconds,
        memory_bytes=settings.image_memory_bytes,
        attempts_per_process=settings.sandbox_attempts_per_process,
    )
    size = run_attempt(write_image, source, mime, rules, output, limits=limits)
    return Processed(main=OutputFile(output, "image/jpeg", "jpg", size["width"], size["height"]))
