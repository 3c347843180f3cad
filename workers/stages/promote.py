"""Last stage: write the processed result to its final key, with headers the CDN and browsers rely on."""

from __future__ import annotations

from urllib.parse import quote

from app.config import Settings
from app.domain.kinds import Visibility
from app.models import Upload
from app.storage import Storage

# Promoted objects never change (a new upload gets a new id), so browsers may keep private ones too;
# `private` keeps shared caches (the CDN) from storing them.
PRIVATE_CACHE_CONTROL = "private, max-age=86400"


def cache_control(settings: Settings, visibility: Visibility) -> str:
    return settings.public_cache_control if visibility == Visibility.PUBLIC else PRIVATE_CACHE_CONTROL


def promote(
    storage: Storage, settings: Settings, upload: Upload, final_key: str, data: bytes, content_type: str
) -> None:
    metadata = {"upload-id": upload.id, "owner-id": upload.owner_id}
    if upload.filename:
        # S3 metadata is ASCII-only; the original name is kept percent-encoded.
        metadata["original-filename"] = quote(upload.filename, safe="")
    visibility = Visibility(upload.visibility)
    storage.put(final_key, data, content_type, cache_control(settings, visibility), metadata)
