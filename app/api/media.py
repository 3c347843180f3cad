"""`/v1/media`: links to promoted media for those allowed to see them."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app.access import may_view, media_link
from app.api.context import current_principal, services
from app.api.errors import not_found
from app.repository import get_upload
from schemas.uploads import MediaResponse

bp = Blueprint("media", __name__, url_prefix="/v1/media")


@bp.get("/<upload_id>")
def get_media(upload_id: str) -> Response:
    viewer = current_principal()
    s = services()
    with s.db.session() as session:
        upload = get_upload(session, upload_id)
        if upload is None or not may_view(session, upload, viewer):
            raise not_found()
    link = media_link(s, upload)
    response = MediaResponse(
        upload_id=upload.id,
        kind=upload.kind,
        content_type=upload.content_type or upload.declared_type,
        bytes=upload.bytes or 0,
        width=upload.width,
        height=upload.height,
        url=link.url,
        url_expires_at=link.expires_at,
    )
    return jsonify(response.model_dump(mode="json", exclude_none=True))
