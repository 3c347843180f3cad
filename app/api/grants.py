"""`/v1/grants`: owners let friends and trainers see their private media."""

from __future__ import annotations

from uuid import UUID

from flask import Blueprint, Response, jsonify

from app.access import Relation, grant, grants_given, grants_received, revoke
from app.api.context import current_principal, services
from app.api.edge import parse_body, query_value
from app.api.errors import ApiError
from app.models import Grant
from schemas.grants import CreateGrantRequest, GrantList, GrantResponse

bp = Blueprint("grants", __name__, url_prefix="/v1/grants")


def _wire(row: Grant) -> GrantResponse:
    return GrantResponse(
        owner_id=row.owner_id, viewer_id=row.viewer_id, relation=row.relation, created_at=row.created_at
    )


@bp.post("")
def create_grant() -> tuple[Response, int]:
    owner = current_principal()
    body = parse_body(CreateGrantRequest)
    viewer_id = str(UUID(body.viewer_id))
    if viewer_id == owner.user_id:
        raise ApiError(422, "invalid_request", "you always see your own media")
    with services().db.session() as session:
        row, created = grant(session, owner.user_id, viewer_id, Relation(body.relation))
        response = _wire(row)
    return jsonify(response.model_dump(mode="json")), 201 if created else 200


@bp.get("")
def list_grants() -> Response:
    """Grants the caller gave (default), or with `?direction=received`, the ones given to the caller."""
    principal = current_principal()
    direction = query_value("direction") or "given"
    if direction not in ("given", "received"):
        raise ApiError(422, "invalid_request", "direction must be 'given' or 'received'")
    lookup = grants_given if direction == "given" else grants_received
    with services().db.session() as session:
        rows = [_wire(row) for row in lookup(session, principal.user_id)]
    return jsonify(GrantList(grants=rows).model_dump(mode="json"))


@bp.delete("/<id:viewer_id>")
def delete_grant(viewer_id: str) -> tuple[str, int]:
    """Idempotent: revoking a grant that does not exist is not an error (a non-UUID id is 404 from routing)."""
    owner = current_principal()
    with services().db.session() as session:
        revoke(session, owner.user_id, viewer_id)
    return "", 204
