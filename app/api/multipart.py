"""`/v1/uploads/<id>/parts` and `/complete`: the resumable half of an upload (see `app.multipart`)."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from app import multipart
from app.api.context import current_principal, services
from app.api.edge import parse_body
from app.api.errors import ApiError, not_found
from app.domain.multipart import MultipartRefused, PartPlan
from app.models import Upload
from app.multipart import MultipartState, MultipartUnavailable
from schemas.uploads import (
    CompleteRequest,
    CompleteResponse,
    PartUrl,
    PartUrlsRequest,
    PartUrlsResponse,
    StoredPartInfo,
    StoredPartsResponse,
)

bp = Blueprint("multipart", __name__, url_prefix="/v1/uploads")

UNAVAILABLE_CODE = {MultipartState.NOT_MULTIPART: "not_multipart", MultipartState.CLOSED: "upload_closed"}


@bp.post("/<id:upload_id>/parts")
def part_urls(upload_id: str) -> Response:
    """Presigned PUTs for the asked parts, each pinned to its part's exact length."""
    body = parse_body(PartUrlsRequest)
    upload, plan = _open(upload_id)
    try:
        urls = multipart.part_urls(services(), upload, plan, body.part_numbers)
    except MultipartRefused as refused:
        raise ApiError(422, refused.code.value, refused.message) from None
    response = PartUrlsResponse(
        parts=[
            PartUrl(
                part_number=part.number,
                url=part.url,
                headers={"Content-Length": str(part.length)},
                expires_at=part.expires_at,
            )
            for part in urls
        ]
    )
    return jsonify(response.model_dump(mode="json"))


@bp.get("/<id:upload_id>/parts")
def stored_parts(upload_id: str) -> Response:
    """The parts the store already holds: a client resumes with the rest."""
    upload, _ = _open(upload_id)
    try:
        parts = multipart.stored_parts(services(), upload)
    except MultipartUnavailable as unavailable:
        raise _refusal(unavailable) from None
    response = StoredPartsResponse(
        parts=[StoredPartInfo(part_number=p.number, etag=p.etag, size=p.size) for p in parts]
    )
    return jsonify(response.model_dump(mode="json"))


@bp.post("/<id:upload_id>/complete")
def complete(upload_id: str) -> tuple[Response, int]:
    body = parse_body(CompleteRequest)
    upload, plan = _open(upload_id)  # first: another user's (or no) upload is 404, whatever the body says
    claimed = {part.part_number: part.etag for part in body.parts}
    if len(claimed) != len(body.parts):
        raise ApiError(422, "invalid_request", "part numbers repeat")
    try:
        status = multipart.complete(services(), upload, plan, claimed)
    except MultipartUnavailable as unavailable:
        raise _refusal(unavailable) from None
    except MultipartRefused as refused:
        raise ApiError(422, refused.code.value, refused.message) from None
    return jsonify(CompleteResponse(upload_id=upload.id, status=status).model_dump(mode="json")), 202


def _open(upload_id: str) -> tuple[Upload, PartPlan]:
    try:
        return multipart.open_upload(services(), upload_id, current_principal().user_id)
    except MultipartUnavailable as unavailable:
        raise _refusal(unavailable) from None


def _refusal(unavailable: MultipartUnavailable) -> ApiError:
    if unavailable.state == MultipartState.NOT_FOUND:
        return not_found()
    return ApiError(409, UNAVAILABLE_CODE[unavailable.state], unavailable.message)
