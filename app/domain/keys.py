"""Object key layout. The client never names a key: every part comes from the broker's own records.

Fresh uploads land at `temp/<id>`; the worker promotes them to `public/...` or `private/...` as DESIGN.md's
kind table says. `<id>` is the upload's UUID, so keys never collide and never carry a user's file name.
"""

from __future__ import annotations

import re
from datetime import date

from app.domain.kinds import Visibility

TEMP_PREFIX = "temp/"
PUBLIC_PREFIX = "public/"  # promoted public media: the CDN's origin (possibly a bucket of its own)
# Every variable segment of a key: what the context rules and the broker's own ids allow, nothing else (no "/",
# no "..", no control characters). A value that slipped past the rules is refused here, never stored.
_SAFE_SEGMENT = re.compile(r"[A-Za-z0-9_-]{1,64}")
_SAFE_EXTENSION = re.compile(r"[a-z0-9]{1,8}")


class UnsafeKeySegment(ValueError):
    """A key segment the rules did not allow (a bug upstream: the ticket rules should have refused it)."""


def _safe(value: str, pattern: re.Pattern[str] = _SAFE_SEGMENT) -> str:
    if not pattern.fullmatch(value):
        raise UnsafeKeySegment(f"unsafe key segment {value!r}")
    return value


def temp_key(upload_id: str) -> str:
    return f"{TEMP_PREFIX}{upload_id}"


def upload_id_from_temp_key(key: str) -> str | None:
    """The upload id a `temp/` key belongs to, or None for keys the broker did not hand out."""
    if not key.startswith(TEMP_PREFIX):
        return None
    rest = key[len(TEMP_PREFIX) :]
    return rest if rest and "/" not in rest else None


def final_key(
    kind: str,
    visibility: Visibility,
    owner_id: str,
    upload_id: str,
    extension: str,
    context: dict[str, str],
) -> str:
    """Where a promoted object lives, per kind."""
    owner_id, upload_id = _safe(owner_id), _safe(upload_id)
    extension = _safe(extension, _SAFE_EXTENSION)
    user = f"user_{owner_id}"
    match kind:
        case "avatar":
            path = f"{user}/profile/{upload_id}.{extension}"
        case "workout_photo" | "workout_video":
            path = f"{user}/workouts/{_safe(context['workout_id'])}/{upload_id}.{extension}"
        case "food_image":
            meal_day = date.fromisoformat(context["meal_date"]).strftime("%Y%m%d")
            path = f"{user}/nutrition/{meal_day}/{upload_id}.{extension}"
        case "exercise_demo":
            path = f"exercises/{_safe(context['exercise_id'])}/{upload_id}.{extension}"
        case "document":
            version = _safe(context.get("version", "1"))
            path = f"{user}/documents/{_safe(context['document_id'])}/v{version}/{upload_id}.{extension}"
        case _:
            raise ValueError(f"unknown kind {kind!r}")
    return f"{visibility.value}/{path}"


def variant_key(main_key: str, variant: str, extension: str) -> str:
    """A variant sits beside its main file: `.../<id>.mp4` → `.../<id>.poster.jpg`, `.../<id>.720p.mp4`."""
    stem = main_key.rsplit(".", 1)[0]
    return f"{stem}.{_safe(variant)}.{_safe(extension, _SAFE_EXTENSION)}"
