"""One current avatar per user: the ready avatar with the newest ticket.

When an avatar becomes ready, a follow-up (registered in `workers.followups`) supersedes every other ready
avatar of its owner: their objects are deleted, their records kept as `superseded`, so old links answer 404
and storage is not wasted. "Newest" is the ticket's time, not the moment processing ended: two avatars that
finish out of order still leave the one the user picked last. Whichever follow-up commits last sees both, so
every interleaving ends the same; replays find nothing left to supersede.
"""

from __future__ import annotations

import logging

from sqlalchemy import select
from sqlalchemy.orm import Session

from app.domain.states import UploadStatus
from app.models import Upload
from app.repository import advance
from app.services import Services

log = logging.getLogger(__name__)

AVATAR_KIND = "avatar"


def ready_avatars(session: Session, owner_id: str) -> list[Upload]:
    """The owner's ready avatars, newest ticket first (ties broken by id, so the order is total)."""
    query = select(Upload).where(
        Upload.owner_id == owner_id,
        Upload.kind == AVATAR_KIND,
        Upload.status == UploadStatus.READY.value,
    )
    return list(session.scalars(query.order_by(Upload.created_at.desc(), Upload.id.desc())))


def current_avatar(session: Session, owner_id: str) -> Upload | None:
    avatars = ready_avatars(session, owner_id)
    return avatars[0] if avatars else None


def supersede_older(services: Services, upload: Upload) -> None:
    """Follow-up of a ready avatar: every ready avatar of the owner but the newest is superseded."""
    if upload.kind != AVATAR_KIND:
        return
    with services.db.session() as session:
        older = ready_avatars(session, upload.owner_id)[1:]
    for previous in older:
        # Objects first (as a delete does): a record left `ready` by a failure here is retried by the next
        # avatar's follow-up, while a record marked first would leave a public object nobody points at.
        for key in previous.object_keys:
            services.storage.delete(key)
        with services.db.session() as session:
            moved = advance(session, previous.id, UploadStatus.SUPERSEDED)
        log.info(
            "avatar superseded",
            extra={
                "upload_id": previous.id,
                "key": previous.final_key,
                "stage": "supersede",
                "outcome": "superseded" if moved else "raced",
                "by": upload.id,
            },
        )
