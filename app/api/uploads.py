"""`/v1/uploads`: tickets and status."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify, url_for

from app.api.context import current_principal, services
from app.api.edge import parse_body
from app.api.errors import ApiError, not_found
from app.api.ratelimit import ticket_rate_limit
from app.domain.tickets import TicketRefusal, TicketRefused, TicketRequest
from app.removal import Removal, remove_upload
from app.repository import get_owned_upload
from app.tickets import Ticket, issue_ticket
from schemas.errors import ErrorDetail
from schemas.uploads import (
    CreateUploadRequest,
    MediaInfo,
    MultipartPlan,
    PresignedPost,
    TicketResponse,
    UploadStatusResponse,
)

bp = Blueprint("uploads", __name__, url_prefix="/v1/uploads")

REFUSAL_STATUS = {
    TicketRefusal.INVALID_REQUEST: 422,
    TicketRefusal.UNSUPPORTED_TYPE: 415,
    TicketRefusal.TOO_LARGE: 413,
    TicketRefusal.FORBIDDEN_KIND: 403,
    TicketRefusal.QUOTA_EXCEEDED: 413,
}


@bp.post("")
@ticket_rate_limit
def create_upload() -> tuple[Response, int]:
    principal = current_principal()
    body = parse_body(CreateUploadRequest)
    context = {k: v for k, v in body.context.model_dump(mode="json").items() if v is not None}
    try:
        ticket = issue_ticket(
            services(),
            principal,
            TicketRequest(body.kind, body.content_type, body.size, context, body.resumable),
            body.filename,
        )
    except TicketRefused as refused:
        raise ApiError(REFUSAL_STATUS[refused.code], refused.code.value, refused.message) from None
    upload = ticket.upload
    response = TicketResponse(
        upload_id=upload.id,
        status=upload.status,
        expires_at=upload.ticket_expires_at,
        max_size=upload.declared_size,
        upload=_how_to_upload(ticket),
    )
    return jsonify(response.model_dump(mode="json")), 201


def _how_to_upload(ticket: Ticket) -> PresignedPost | MultipartPlan:
    if ticket.post is not None:
        return PresignedPost(url=ticket.post["url"], fields=ticket.post["fields"])
    assert ticket.parts is not None
    upload_id = ticket.upload.id
    return MultipartPlan(
        part_size=ticket.parts.part_size,
        part_count=ticket.parts.part_count,
        parts_url=url_for("multipart.part_urls", upload_id=upload_id, _external=True),
        complete_url=url_for("multipart.complete", upload_id=upload_id, _external=True),
    )


@bp.delete("/<id:upload_id>")
def cancel_upload(upload_id: str) -> tuple[str, int]:
    """Cancel an upload (abort its parts, void its ticket, delete what reached the store); idempotent."""
    outcome = remove_upload(services(), upload_id, current_principal().user_id)
    if outcome == Removal.NOT_FOUND:
        raise not_found()
    if outcome == Removal.IN_PROGRESS:
        raise ApiError(
            409, "upload_in_progress", "a worker is processing the upload; delete it once it is done"
        )
    return "", 204


@bp.get("/<id:upload_id>")
def get_upload(upload_id: str) -> Response:
    principal = current_principal()
    with services().db.session() as session:
        upload = get_owned_upload(session, upload_id, principal.user_id)
        if upload is None:
            raise not_found()
    media = None
    if upload.status == "ready" and upload.content_type and upload.bytes is not None and upload.sha256:
        media = MediaInfo(
            content_type=upload.content_type,
            bytes=upload.bytes,
            width=upload.width,
            height=upload.height,
            duration_seconds=upload.duration_seconds,
            codecs=upload.codecs,
            pages=upload.pages,
            sha256=upload.sha256,
            variants=[variant.name for variant in upload.variants] or None,
        )
    error = None
    if upload.error_code:
        error = ErrorDetail(code=upload.error_code, message=upload.error_message or upload.error_code)
    response = UploadStatusResponse(
        upload_id=upload.id,
        kind=upload.kind,
        status=upload.status,
        created_at=upload.created_at,
        updated_at=upload.updated_at,
        media=media,
        error=error,
    )
    return jsonify(response.model_dump(mode="json", exclude_none=True))
