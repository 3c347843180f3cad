"""`/v1/documents/<document_id>`: a document's versions, and `/v1/users/<uid>/avatar`: a user's current avatar."""

from __future__ import annotations

from uuid import UUID

from flask import Blueprint, Response, jsonify

from app.access import visible_visibilities
from app.api.context import current_principal, services
from app.api.edge import query_value
from app.api.errors import not_found
from app.api.media import media_wire
from app.avatars import current_avatar
from app.documents import ready_versions
from app.domain.kinds import Visibility
from app.domain.tickets import CONTEXT_ID
from schemas.uploads import DocumentVersions

bp = Blueprint("documents", __name__)


@bp.get("/v1/documents/<document_id>")
def document_versions(document_id: str) -> Response:
    """The caller's document (or, with `owner=`, another user's they were granted), newest version first.
    Documents are private: anyone without a grant gets the same 404 as for a document that does not exist."""
    viewer = current_principal()
    owner_id = _user_id_or_404(query_value("owner") or viewer.user_id)
    if not CONTEXT_ID.fullmatch(document_id):
        raise not_found()
    with services().db.session() as session:
        if Visibility.PRIVATE not in visible_visibilities(session, owner_id, viewer):
            raise not_found()
        versions = ready_versions(session, owner_id, document_id)
    if not versions:
        raise not_found()
    body = DocumentVersions(document_id=document_id, versions=[media_wire(upload) for upload in versions])
    return jsonify(body.model_dump(mode="json", exclude_none=True))


@bp.get("/v1/users/<id:user_id>/avatar")
def avatar(user_id: str) -> Response:
    """Any signed-in user may see anyone's current avatar (avatars are public)."""
    current_principal()
    with services().db.session() as session:
        upload = current_avatar(session, user_id)
    if upload is None:
        raise not_found()
    return jsonify(media_wire(upload).model_dump(mode="json", exclude_none=True))


def _user_id_or_404(value: str) -> str:
    try:
        return str(UUID(value))
    except ValueError:
        raise not_found() from None
