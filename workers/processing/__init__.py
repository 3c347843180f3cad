"""Processors, one per kind of processing: a local file in, the files to store out (`Processed`).

Each processor runs its decoders in a limited child process (`workers.sandbox`), so a hostile file costs at
most the limits of its kind of processing, and a breach is a rejection. Adding a kind of processing is adding
a module with a `process` function and a line in `PROCESSORS`.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from app.config import Settings
from app.domain.kinds import MediaKind, Processing
from workers.processing import image, pdf, video
from workers.processing.outputs import Processed


class Processor(Protocol):
    def __call__(
        self, source: Path, mime: str, kind: MediaKind, settings: Settings, workdir: Path
    ) -> Processed: ...


class ProcessingNotAvailable(Exception):
    """A kind of processing that is not built; tickets for it are refused, so this means a bad record."""


PROCESSORS: dict[Processing, Processor] = {
    Processing.IMAGE: image.process,
    Processing.PDF: pdf.process,
    Processing.VIDEO: video.process,
}


def processor_for(processing: Processing) -> Processor:
    try:
        return PROCESSORS[processing]
    except KeyError:
        raise ProcessingNotAvailable(f"no {processing.value} processing in this version") from None
