"""`/v1/media`: links to promoted media for those allowed to see them, listing, and deletion."""

from __future__ import annotations

import base64
import binascii
from datetime import datetime
from uuid import UUID

from flask import Blueprint, Response, jsonify

from app.access import may_view, media_link, visible_visibilities
from app.api.context import current_principal, services
from app.api.edge import query_value
from app.api.errors import ApiError, not_found
from app.domain.errors import ErrorCode
from app.domain.kinds import KINDS
from app.domain.states import UploadStatus
from app.models import Upload, Variant
from app.removal import Removal, remove_upload
from app.repository import get_upload, list_ready_media
from schemas.uploads import MediaPage, MediaResponse, VariantLink

bp = Blueprint("media", __name__, url_prefix="/v1/media")

DEFAULT_PAGE = 20
MAX_PAGE = 100


def media_wire(upload: Upload) -> MediaResponse:
    link = media_link(services(), upload)
    return MediaResponse(
        upload_id=upload.id,
        kind=upload.kind,
        content_type=upload.content_type or upload.declared_type,
        bytes=upload.bytes or 0,
        width=upload.width,
        height=upload.height,
        duration_seconds=upload.duration_seconds,
        codecs=upload.codecs,
        pages=upload.pages,
        document_id=upload.document_id,
        version=upload.version,
        url=link.url,
        url_expires_at=link.expires_at,
        variants={variant.name: _variant(upload, variant) for variant in upload.variants} or None,
    )


def _variant(upload: Upload, variant: Variant) -> VariantLink:
    link = media_link(services(), upload, variant.key)
    return VariantLink(
        content_type=variant.content_type,
        bytes=variant.bytes,
        width=variant.width,
        height=variant.height,
        url=link.url,
        url_expires_at=link.expires_at,
    )


# Statuses of an upload on its way to `ready`: its owner asking for the media is told to wait, not "no such".
IN_FLIGHT = frozenset({UploadStatus.PENDING, UploadStatus.UPLOADED, UploadStatus.PROCESSING})


@bp.get("/<id:upload_id>")
def get_media(upload_id: str) -> Response:
    viewer = current_principal()
    with services().db.session() as session:
        upload = get_upload(session, upload_id)
        if upload is not None and upload.owner_id == viewer.user_id and upload.status in IN_FLIGHT:
            return not_ready(upload)
        if upload is None or not may_view(session, upload, viewer):
            raise not_found()  # anyone else learns nothing of an upload that is not ready (nor visible)
    return jsonify(media_wire(upload).model_dump(mode="json", exclude_none=True))


def not_ready(upload: Upload) -> Response:
    """409 `not_ready` with the upload's `status` beside the code, so a client polls on without a second call
    (`GET /v1/uploads/<id>` says the same, and `rejected`/`failed` with the reason: those answer 404 here)."""
    response = jsonify(
        {
            "error": {
                "code": ErrorCode.NOT_READY.value,
                "message": f"the upload is {upload.status}, not ready yet; ask again shortly",
                "status": upload.status,
            }
        }
    )
    response.status_code = ErrorCode.NOT_READY.status
    response.headers["Retry-After"] = "1"
    return response


@bp.get("")
def list_media() -> Response:
    """The caller's media (or, with `owner=`, what the caller may see of another user's), newest first."""
    viewer = current_principal()
    owner_id = _user_id(query_value("owner") or viewer.user_id)
    kind = query_value("kind") or None
    if kind is not None and kind not in KINDS:
        raise ApiError(422, "invalid_request", f"kind: not one of {', '.join(sorted(KINDS))}")
    limit = _page_size(query_value("limit"))
    before = _decode_cursor(query_value("cursor"))
    with services().db.session() as session:
        visibilities = visible_visibilities(session, owner_id, viewer)
        rows = list_ready_media(session, owner_id, frozenset(visibilities), kind, before, limit + 1)
    page, more = rows[:limit], len(rows) > limit
    next_cursor = _encode_cursor(page[-1]) if more and page else None
    body = MediaPage(items=[media_wire(upload) for upload in page], next_cursor=next_cursor)
    return jsonify(body.model_dump(mode="json", exclude_none=True))


@bp.delete("/<id:upload_id>")
def delete_media(upload_id: str) -> tuple[str, int]:
    """Owner only; idempotent (deleting twice is 204 both times)."""
    owner = current_principal()
    outcome = remove_upload(services(), upload_id, owner.user_id)
    if outcome == Removal.NOT_FOUND:
        raise not_found()
    if outcome == Removal.IN_PROGRESS:
        raise ApiError(409, "upload_in_progress", "the upload is being processed; delete it once it is done")
    return "", 204


def _user_id(value: str) -> str:
    try:
        return str(UUID(value))
    except ValueError:
        raise ApiError(422, "invalid_request", "owner must be a user id (UUID)") from None


def _page_size(raw: str | None) -> int:
    try:
        size = int(raw) if raw else DEFAULT_PAGE
    except ValueError:
        size = 0
    if not 1 <= size <= MAX_PAGE:
        raise ApiError(422, "invalid_request", f"limit must be 1-{MAX_PAGE}")
    return size


def _encode_cursor(upload: Upload) -> str:
    raw = f"{upload.created_at.isoformat()}|{upload.id}"
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _decode_cursor(cursor: str | None) -> tuple[datetime, str] | None:
    """Opaque to clients: the (created_at, id) of the last item they saw."""
    if not cursor:
        return None
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)).decode()
        created_at, upload_id = raw.split("|", 1)
        return datetime.fromisoformat(created_at), upload_id
    except (binascii.Error, UnicodeDecodeError, ValueError):
        raise ApiError(422, "invalid_request", "cursor is not one this API returned") from None
