"""What a processor hands back: the main file and its named variants, as files in the work directory.

Processors run in a limited child process (`workers.sandbox`) and answer in plain JSON, so these types travel
as `to_json()` / `from_json()`. The parent never trusts a path from the child blindly: every file must sit in
the work directory it gave the child.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any


@dataclass(frozen=True)
class OutputFile:
    """One file to store: the processed media itself, or a variant of it (a poster, a 720p rendition)."""

    path: Path
    content_type: str
    extension: str  # of its key: "jpg", "mp4", "pdf"
    width: int | None = None
    height: int | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "path": str(self.path),
            "content_type": self.content_type,
            "extension": self.extension,
            "width": self.width,
            "height": self.height,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], workdir: Path) -> OutputFile:
        path = Path(data["path"])
        if path.parent != workdir or not path.is_file():
            raise ValueError(f"processor output {path} is not a file in {workdir}")
        return cls(path, data["content_type"], data["extension"], data.get("width"), data.get("height"))


@dataclass(frozen=True)
class Processed:
    """Everything one processing attempt produced. `variants` are keyed by name (`poster`, `720p`)."""

    main: OutputFile
    variants: dict[str, OutputFile] = field(default_factory=dict)
    duration_seconds: float | None = None
    pages: int | None = None
    codecs: str | None = None  # a video's, as stored: "h264+aac", "hevc"

    def to_json(self) -> dict[str, Any]:
        return {
            "main": self.main.to_json(),
            "variants": {name: output.to_json() for name, output in self.variants.items()},
            "duration_seconds": self.duration_seconds,
            "pages": self.pages,
            "codecs": self.codecs,
        }

    @classmethod
    def from_json(cls, data: dict[str, Any], workdir: Path) -> Processed:
        return cls(
            main=OutputFile.from_json(data["main"], workdir),
            variants={
                name: OutputFile.from_json(output, workdir) for name, output in data["variants"].items()
            },
            duration_seconds=data.get("duration_seconds"),
            pages=data.get("pages"),
            codecs=data.get("codecs"),
        )
