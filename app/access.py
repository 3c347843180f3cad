"""Who may see which media, and the link they get.

Public media go out through the CDN (cacheable, no expiry); private media only as a presigned GET that
expires in `private_url_ttl_seconds` (60 s by default), and only to the owner.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, datetime, timedelta

from sqlalchemy.orm import Session

from app.auth import Principal
from app.domain.kinds import Visibility
from app.domain.states import UploadStatus
from app.models import Upload
from app.services import Services


@dataclass(frozen=True)
class MediaLink:
    url: str
    expires_at: datetime | None


def may_view(session: Session, upload: Upload, viewer: Principal) -> bool:
    if upload.status != UploadStatus.READY or upload.final_key is None:
        return False
    return upload.owner_id == viewer.user_id


def media_link(services: Services, upload: Upload) -> MediaLink:
    assert upload.final_key is not None
    if upload.visibility == Visibility.PUBLIC:
        return MediaLink(services.storage.public_url(upload.final_key), None)
    ttl = services.settings.private_url_ttl_seconds
    expires_at = datetime.now(UTC) + timedelta(seconds=ttl)
    return MediaLink(services.storage.presign_get(upload.final_key, ttl), expires_at)
