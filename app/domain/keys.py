"""Object key layout. The client never names a key: every part comes from the broker's own records.

Fresh uploads land at `temp/<id>`; the worker promotes them to `public/...` or `private/...` as DESIGN.md's
kind table says. `<id>` is the upload's UUID, so keys never collide and never carry a user's file name.
"""

from __future__ import annotations

from datetime import date

from app.domain.kinds import Visibility

TEMP_PREFIX = "temp/"


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
    user = f"user_{owner_id}"
    match kind:
        case "avatar":
            path = f"{user}/profile/{upload_id}.{extension}"
        case "workout_photo" | "workout_video":
            path = f"{user}/workouts/{context['workout_id']}/{upload_id}.{extension}"
        case "food_image":
            meal_day = date.fromisoformat(context["meal_date"]).strftime("%Y%m%d")
            path = f"{user}/nutrition/{meal_day}/{upload_id}.{extension}"
        case "exercise_demo":
            path = f"exercises/{context['exercise_id']}/{upload_id}.{extension}"
        case "document":
            version = context.get("version", "1")
            path = f"{user}/documents/{context['document_id']}/v{version}/{upload_id}.{extension}"
        case _:
            raise ValueError(f"unknown kind {kind!r}")
    return f"{visibility.value}/{path}"
