"""Last stage: stream every processed file to its final key, with headers the CDN and browsers rely on.

The main file goes to the kind's key (`app.domain.keys.final_key`), each variant beside it
(`variant_key`). Files are uploaded from disk (multipart when big), and their size and sha256 are read from
the same files, so what is recorded is what was stored.
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from urllib.parse import quote

from app.config import Settings
from app.domain.keys import variant_key
from app.domain.kinds import Visibility
from app.models import Upload
from app.storage import Storage
from workers.processing.outputs import OutputFile, Processed

# Promoted objects never change (a new upload gets a new id), so browsers may keep private ones too;
# `private` keeps shared caches (the CDN) from storing them.
PRIVATE_CACHE_CONTROL = "private, max-age=86400"
MAIN = "main"  # the name of the main file among the stored ones


@dataclass(frozen=True)
class StoredFile:
    name: str  # MAIN, or the variant's name
    key: str
    content_type: str
    bytes: int
    width: int | None
    height: int | None
    sha256: str


def cache_control(settings: Settings, visibility: Visibility) -> str:
    return settings.public_cache_control if visibility == Visibility.PUBLIC else PRIVATE_CACHE_CONTROL


def promote(
    storage: Storage, settings: Settings, upload: Upload, main_key: str, processed: Processed
) -> dict[str, StoredFile]:
    """Store the main file and every variant; returns what was stored, by name (`main` first)."""
    metadata = {"upload-id": upload.id, "owner-id": upload.owner_id}
    if upload.filename:
        # S3 metadata is ASCII-only; the original name is kept percent-encoded.
        metadata["original-filename"] = quote(upload.filename, safe="")
    headers = cache_control(settings, Visibility(upload.visibility))
    targets = {MAIN: (main_key, processed.main)} | {
        name: (variant_key(main_key, name, output.extension), output)
        for name, output in processed.variants.items()
    }
    stored = {}
    for name, (key, output) in targets.items():
        storage.upload_file(key, output.path, output.content_type, headers, metadata)
        stored[name] = _describe(name, key, output)
    return stored


def _describe(name: str, key: str, output: OutputFile) -> StoredFile:
    with output.path.open("rb") as stream:
        digest = hashlib.file_digest(stream, "sha256").hexdigest()
    return StoredFile(
        name=name,
        key=key,
        content_type=output.content_type,
        bytes=output.path.stat().st_size,
        width=output.width,
        height=output.height,
        sha256=digest,
    )
