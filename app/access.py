"""Who may see which media, and the link they get (the seed's owner / friend / trainer rule).

- Public media (avatars, food photos) may be seen by any signed-in user; the link is the CDN URL.
- Private media (workout photos, documents) only by the owner and by users the owner granted access
  (friend or trainer); the link is a presigned GET that expires in `private_url_ttl_seconds` (60 s).
- Everyone else gets the same 404 as for a missing id: existence is not leaked.
Grants are read on every request, so a revoke takes effect on the very next one.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum

from sqlalchemy import delete, select
from sqlalchemy.orm import Session

from app.auth import Principal
from app.domain.documents import DOCUMENT_KIND, attachment_disposition
from app.domain.kinds import Visibility
from app.domain.states import UploadStatus
from app.models import Grant, Upload
from app.services import Services


class Relation(StrEnum):
    FRIEND = "friend"
    TRAINER = "trainer"


@dataclass(frozen=True)
class MediaLink:
    url: str
    expires_at: datetime | None


def has_grant(session: Session, owner_id: str, viewer_id: str) -> bool:
    return session.get(Grant, (owner_id, viewer_id)) is not None


def may_view(session: Session, upload: Upload, viewer: Principal) -> bool:
    if upload.status != UploadStatus.READY or upload.final_key is None:
        return False
    if upload.owner_id == viewer.user_id or upload.visibility == Visibility.PUBLIC:
        return True
    return has_grant(session, upload.owner_id, viewer.user_id)


def visible_visibilities(session: Session, owner_id: str, viewer: Principal) -> frozenset[Visibility]:
    """Which of `owner_id`'s media `viewer` may list."""
    if owner_id == viewer.user_id or has_grant(session, owner_id, viewer.user_id):
        return frozenset(Visibility)
    return frozenset({Visibility.PUBLIC})


def media_link(services: Services, upload: Upload, key: str | None = None) -> MediaLink:
    """The link to the upload's main file, or to `key` (one of its variants), as its visibility allows."""
    key = key or upload.final_key
    assert key is not None
    if upload.visibility == Visibility.PUBLIC:
        return MediaLink(services.storage.public_url(key), None)
    ttl = services.settings.private_url_ttl_seconds
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
    disposition = attachment_disposition(upload.filename) if upload.kind == DOCUMENT_KIND else None
    return MediaLink(services.storage.presign_get(key, ttl, disposition), expires_at)


def grant(session: Session, owner_id: str, viewer_id: str, relation: Relation) -> tuple[Grant, bool]:
    """Create or update a grant; returns it and whether it is new."""
    existing = session.get(Grant, (owner_id, viewer_id))
    if existing is not None:
        existing.relation = relation.value
        return existing, False
    created = Grant(
        owner_id=owner_id, viewer_id=viewer_id, relation=relation.value, created_at=datetime.now(UTC)
    )
    session.add(created)
    return created, True


def revoke(session: Session, owner_id: str, viewer_id: str) -> None:
    session.execute(delete(Grant).where(Grant.owner_id == owner_id, Grant.viewer_id == viewer_id))


def grants_given(session: Session, owner_id: str) -> list[Grant]:
    return list(session.scalars(select(Grant).where(Grant.owner_id == owner_id).order_by(Grant.created_at)))


def grants_received(session: Session, viewer_id: str) -> list[Grant]:
    return list(session.scalars(select(Grant).where(Grant.viewer_id == viewer_id).order_by(Grant.created_at)))
