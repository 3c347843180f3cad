"""The progress bar of an upload (rich): bytes sent of the total, speed, time left. On stderr, so stdout
stays the result (`--json` prints exactly one document there)."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

from rich.console import Console
from rich.progress import (
    BarColumn,
    DownloadColumn,
    Progress,
    TextColumn,
    TimeRemainingColumn,
    TransferSpeedColumn,
)

from app.client.bodies import OnRead


@contextmanager
def byte_bar(label: str, total: int, done: int) -> Iterator[OnRead]:
    """A bar from `done` to `total` bytes; the value is told every block sent (negative: a try undone)."""
    progress = Progress(
        TextColumn("{task.description}"),
        BarColumn(),
        DownloadColumn(binary_units=True),
        TransferSpeedColumn(),
        TimeRemainingColumn(),
        console=Console(stderr=True),
    )
    with progress:
        task = progress.add_task(label, total=total, completed=done)
        yield lambda sent: progress.advance(task, sent)
