"""Documents (workout plans, meal guides): versions of one owner's document, and how their links download.

No I/O here. A document is named by the owner's `document_id`; every upload for it that becomes ready is its
next version. Links carry `Content-Disposition: attachment` with the original file name (RFC 6266), so a
browser saves "Plan — Woche 1.pdf" rather than the object's key, which never contains a user's file name.
"""

from __future__ import annotations

import unicodedata
from urllib.parse import quote

DOCUMENT_KIND = "document"
_FALLBACK_NAME = "document.pdf"


def attachment_disposition(filename: str | None) -> str:
    """`attachment; filename="<ASCII fallback>"; filename*=UTF-8''<percent-encoded name>` (RFC 6266 §4.3)."""
    name = filename or _FALLBACK_NAME
    ascii_name = unicodedata.normalize("NFKD", name).encode("ascii", "ignore").decode()
    fallback = "".join("_" if ch in '"\\' or not ch.isprintable() else ch for ch in ascii_name).strip()
    if not fallback.rsplit(".", 1)[0].strip():  # nothing of the name survives in ASCII
        fallback = _FALLBACK_NAME
    return f"attachment; filename=\"{fallback}\"; filename*=UTF-8''{quote(name, safe='')}"
