"""The media kinds the app uploads, and the rules each one carries.

One table (`KINDS`) is the source of truth for accepted types, size limits, visibility, processing and the
context a ticket needs; the API, the worker and the key layout all read it from here.
"""

from __future__ import annotations

from dataclasses import dataclass
from enum import StrEnum

MiB = 1024 * 1024
GiB = 1024 * MiB
FULL_HD = 1920 * 1080  # pixels in a 1080p frame


class Visibility(StrEnum):
    PUBLIC = "public"  # served through the CDN, cacheable
    PRIVATE = "private"  # served only through short-lived presigned GETs to allowed viewers


class Processing(StrEnum):
    IMAGE = "image"
    VIDEO = "video"
    PDF = "pdf"


# Content type -> processing it gets. HEIC is what iPhones shoot; it is decoded and re-encoded as JPEG.
IMAGE_TYPES = frozenset({"image/jpeg", "image/png", "image/webp", "image/heic"})
VIDEO_TYPES = frozenset({"video/mp4", "video/quicktime"})
PDF_TYPES = frozenset({"application/pdf"})


def processing_for(content_type: str) -> Processing:
    if content_type in IMAGE_TYPES:
        return Processing.IMAGE
    if content_type in VIDEO_TYPES:
        return Processing.VIDEO
    if content_type in PDF_TYPES:
        return Processing.PDF
    raise ValueError(f"no processing for {content_type}")


@dataclass(frozen=True)
class MediaKind:
    name: str
    content_types: frozenset[str]
    max_size: int
    visibility: Visibility
    required_context: tuple[str, ...] = ()
    staff_only: bool = False
    # Videos longer than this are refused (`video_too_long`): a workout recording, not a film.
    max_duration_seconds: int | None = None
    # What a video may cost to process: pixels per frame x seconds, each frame counted as 1/30 s (so 60 fps
    # costs twice 30 fps, as it does in CPU). Over it: `too_complex`. A 10 KB file can declare 10 minutes of 4K;
    # this bounds what any upload of the kind can buy, checked from the sample table and again per packet.
    max_video_pixel_seconds: int | None = None
    # Kinds whose processing is not built yet are refused at the ticket, so nothing waits forever.
    enabled: bool = True


KINDS: dict[str, MediaKind] = {
    kind.name: kind
    for kind in (
        MediaKind("avatar", IMAGE_TYPES, 5 * MiB, Visibility.PUBLIC),
        MediaKind("workout_photo", IMAGE_TYPES, 15 * MiB, Visibility.PRIVATE, ("workout_id",)),
        MediaKind(
            "workout_video",
            VIDEO_TYPES,
            1 * GiB,
            Visibility.PRIVATE,
            ("workout_id",),
            max_duration_seconds=10 * 60,
            # The duration limit at the iPhone's default 1080p30 (~3.5 CPU-minutes on one core); 4K for 2.5 min.
            max_video_pixel_seconds=FULL_HD * 10 * 60,
        ),
        MediaKind("food_image", IMAGE_TYPES, 10 * MiB, Visibility.PUBLIC),
        MediaKind(
            "exercise_demo",
            IMAGE_TYPES | VIDEO_TYPES,
            500 * MiB,
            Visibility.PUBLIC,
            ("exercise_id",),
            staff_only=True,
            max_duration_seconds=5 * 60,
            # Staff record demos in 4K as often as not: 5 minutes of 1080p30, or 75 s of 4K30.
            max_video_pixel_seconds=FULL_HD * 5 * 60,
        ),
        MediaKind("document", PDF_TYPES, 20 * MiB, Visibility.PRIVATE, ("document_id",)),
    )
}
