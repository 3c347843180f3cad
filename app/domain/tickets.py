"""Upload tickets: what a client may upload, decided before any byte moves.

`plan_ticket` applies the kind's rules to a request; `post_policy_conditions` turns the plan into the
conditions S3 signs into the POST policy. The policy pins the exact key, the content type and the size, so
the client can neither choose nor widen any of them.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from datetime import date
from enum import StrEnum

from app.domain.kinds import KINDS, MediaKind

# Context values become parts of object keys, so they are restricted to key-safe characters.
CONTEXT_ID = re.compile(r"[A-Za-z0-9_-]{1,64}")  # always fullmatch: `$` would admit a final "\n"
STAFF_ROLE = "staff"


class TicketRefusal(StrEnum):
    INVALID_REQUEST = "invalid_request"
    UNSUPPORTED_TYPE = "unsupported_type"
    TOO_LARGE = "too_large"
    FORBIDDEN_KIND = "forbidden_kind"
    QUOTA_EXCEEDED = "quota_exceeded"


class TicketRefused(Exception):
    def __init__(self, code: TicketRefusal, message: str) -> None:
        super().__init__(message)
        self.code = code
        self.message = message


@dataclass(frozen=True)
class TicketRequest:
    kind: str
    content_type: str
    size: int
    context: dict[str, str] = field(default_factory=dict)
    resumable: bool = False


@dataclass(frozen=True)
class TicketPlan:
    kind: MediaKind
    content_type: str
    max_bytes: int  # the signed content-length-range upper bound
    context: dict[str, str]


def plan_ticket(request: TicketRequest, roles: frozenset[str], today: date) -> TicketPlan:
    """Check a ticket request against its kind's rules; raise `TicketRefused` with a stable code."""
    kind = KINDS.get(request.kind)
    if kind is not None and kind.staff_only and STAFF_ROLE not in roles:
        raise TicketRefused(TicketRefusal.FORBIDDEN_KIND, f"only staff may upload {kind.name}")
    if kind is None or not kind.enabled:
        known = ", ".join(sorted(k.name for k in KINDS.values() if k.enabled))
        raise TicketRefused(TicketRefusal.INVALID_REQUEST, f"unknown kind {request.kind!r}; one of: {known}")
    content_type = request.content_type.strip().lower()
    if content_type not in kind.content_types:
        accepted = ", ".join(sorted(kind.content_types))
        raise TicketRefused(
            TicketRefusal.UNSUPPORTED_TYPE, f"{kind.name} accepts {accepted}, not {request.content_type!r}"
        )
    if request.size > kind.max_size:
        raise TicketRefused(
            TicketRefusal.TOO_LARGE, f"{kind.name} is limited to {kind.max_size} bytes, got {request.size}"
        )
    return TicketPlan(kind, content_type, request.size, _context_for(kind, request.context, today))


def _context_for(kind: MediaKind, given: dict[str, str], today: date) -> dict[str, str]:
    context = {name: value for name, value in given.items() if value is not None}
    if kind.name == "food_image":
        context.setdefault("meal_date", today.isoformat())
        try:
            date.fromisoformat(context["meal_date"])
        except ValueError:
            raise TicketRefused(TicketRefusal.INVALID_REQUEST, "meal_date must be YYYY-MM-DD") from None
    for name in kind.required_context:
        if name not in context:
            raise TicketRefused(TicketRefusal.INVALID_REQUEST, f"{kind.name} needs context.{name}")
    for name, value in context.items():
        if name != "meal_date" and not CONTEXT_ID.fullmatch(value):
            raise TicketRefused(
                TicketRefusal.INVALID_REQUEST, f"context.{name} must be 1-64 letters, digits, '-' or '_'"
            )
    return context


def post_policy_conditions(bucket: str, key: str, content_type: str, max_bytes: int) -> list[object]:
    """The conditions signed into the POST policy; S3 refuses any upload that breaks one of them."""
    return [
        {"bucket": bucket},
        ["eq", "$key", key],
        ["eq", "$Content-Type", content_type],
        ["content-length-range", 1, max_bytes],
    ]


def check_quota(in_use: int, requested: int, quota: int | None) -> None:
    """A user's stored media plus open tickets may not exceed their quota (None = unlimited)."""
    if quota is not None and in_use + requested > quota:
        raise TicketRefused(
            TicketRefusal.QUOTA_EXCEEDED,
            f"storage quota is {quota} bytes; {in_use} in use, this upload needs {requested}",
        )
