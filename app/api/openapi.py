"""`GET /openapi.json`: OpenAPI 3.1 of the API, generated from the same pydantic schemas the handlers use."""

from __future__ import annotations

import json
import sys
from dataclasses import dataclass, field
from functools import cache
from http import HTTPStatus
from typing import Any

from flask import Blueprint, Response, jsonify
from pydantic import BaseModel
from pydantic.json_schema import JsonSchemaMode, models_json_schema

from schemas.errors import ErrorResponse
from schemas.grants import CreateGrantRequest, GrantList, GrantResponse
from schemas.uploads import (
    CONTEXT_ID_PATTERN,
    KIND_SCHEMA,
    UUID_PATTERN,
    CompleteRequest,
    CompleteResponse,
    CreateUploadRequest,
    DocumentVersions,
    MediaPage,
    MediaResponse,
    PartUrlsRequest,
    PartUrlsResponse,
    StoredPartsResponse,
    TicketResponse,
    UploadStatusResponse,
)

bp = Blueprint("openapi", __name__)


@dataclass(frozen=True)
class Operation:
    method: str
    path: str
    summary: str
    responses: dict[int, type[BaseModel] | None]
    body: type[BaseModel] | None = None
    auth: bool = True
    query: tuple[str, ...] = field(default=())


OPERATIONS = (
    Operation(
        "post",
        "/v1/uploads",
        "Request an upload ticket (presigned S3 POST)",
        {
            201: TicketResponse,
            401: ErrorResponse,
            403: ErrorResponse,
            413: ErrorResponse,
            415: ErrorResponse,
            422: ErrorResponse,
            429: ErrorResponse,
        },
        CreateUploadRequest,
    ),
    Operation(
        "get",
        "/v1/uploads/{upload_id}",
        "An upload's status (owner only)",
        {200: UploadStatusResponse, 404: ErrorResponse},
    ),
    Operation(
        "delete",
        "/v1/uploads/{upload_id}",
        "Cancel an upload: abort its parts, void its ticket (owner only, idempotent)",
        {204: None, 404: ErrorResponse, 409: ErrorResponse},
    ),
    Operation(
        "post",
        "/v1/uploads/{upload_id}/parts",
        "Presigned PUTs for parts of a resumable upload, each pinned to its exact length",
        {200: PartUrlsResponse, 404: ErrorResponse, 409: ErrorResponse, 422: ErrorResponse},
        PartUrlsRequest,
    ),
    Operation(
        "get",
        "/v1/uploads/{upload_id}/parts",
        "The parts the store holds (resume with the others)",
        {200: StoredPartsResponse, 404: ErrorResponse, 409: ErrorResponse},
    ),
    Operation(
        "post",
        "/v1/uploads/{upload_id}/complete",
        "Complete a resumable upload once its parts add up to the declared size",
        {202: CompleteResponse, 404: ErrorResponse, 409: ErrorResponse, 422: ErrorResponse},
        CompleteRequest,
    ),
    Operation(
        "get",
        "/v1/media",
        "Ready media of the caller, or what the caller may see of `owner`",
        {200: MediaPage, 422: ErrorResponse},
        query=("kind", "owner", "cursor", "limit"),
    ),
    Operation(
        "get",
        "/v1/media/{upload_id}",
        "A link to ready media (presigned for private media); 409 `not_ready` to the owner while in flight",
        {200: MediaResponse, 404: ErrorResponse, 409: ErrorResponse},
    ),
    Operation(
        "delete",
        "/v1/media/{upload_id}",
        "Delete media (owner only, idempotent)",
        {204: None, 404: ErrorResponse, 409: ErrorResponse},
    ),
    Operation(
        "get",
        "/v1/documents/{document_id}",
        "A document's ready versions, newest first (owner, or a user the owner granted access)",
        {200: DocumentVersions, 404: ErrorResponse},
        query=("owner",),
    ),
    Operation(
        "get",
        "/v1/users/{user_id}/avatar",
        "A user's current avatar (any signed-in user)",
        {200: MediaResponse, 404: ErrorResponse},
    ),
    Operation(
        "post",
        "/v1/grants",
        "Let a friend or trainer see your private media",
        {200: GrantResponse, 201: GrantResponse, 422: ErrorResponse},
        CreateGrantRequest,
    ),
    Operation(
        "get",
        "/v1/grants",
        "Grants you gave (or, direction=received, were given)",
        {200: GrantList},
        query=("direction",),
    ),
    Operation("delete", "/v1/grants/{viewer_id}", "Revoke a grant (idempotent)", {204: None}),
    Operation(
        "post",
        "/v1/events/s3",
        "S3 event notifications: SNS (signed) or direct (webhook token); 422 `invalid_record` when a record "
        "is refused (the event's other records are handled, see `outcomes`)",
        {
            200: None,
            400: ErrorResponse,
            401: ErrorResponse,
            403: ErrorResponse,
            422: ErrorResponse,
            503: ErrorResponse,
        },
        auth=False,
    ),
    Operation("get", "/healthz", "Liveness", {200: None}, auth=False),
    Operation("get", "/readyz", "Readiness of database, Redis and S3", {200: None, 503: None}, auth=False),
    Operation("get", "/metrics", "Prometheus metrics", {200: None}, auth=False),
    Operation("get", "/openapi.json", "This document", {200: None}, auth=False),
)


@cache
def openapi_document() -> dict[str, Any]:
    # Bodies are documented as the server reads them, answers as it writes them: in serialization mode a
    # field the server always sends (a ticket's `method`, the discriminator) is required, so a typed client
    # can rely on it. No model is both a body and an answer, so each keeps its plain name.
    modes: dict[type[BaseModel], JsonSchemaMode] = {op.body: "validation" for op in OPERATIONS if op.body}
    for op in OPERATIONS:
        modes.update({model: "serialization" for model in op.responses.values() if model})
    refs, definitions = models_json_schema(
        sorted(modes.items(), key=lambda item: item[0].__name__),
        ref_template="#/components/schemas/{model}",
    )
    ref_of = {model: refs[(model, mode)] for model, mode in modes.items()}
    paths: dict[str, dict[str, Any]] = {}
    for op in OPERATIONS:
        paths.setdefault(op.path, {})[op.method] = _operation(op, ref_of)
    return {
        "openapi": "3.1.0",
        "info": {"title": "upload-broker", "version": "1", "description": "Direct-to-S3 media uploads."},
        "paths": paths,
        "components": {
            "schemas": definitions.get("$defs", {}),
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer", "bearerFormat": "JWT"}},
        },
    }


# Path parameters are ids (UUIDs, any case, as routing accepts them), except the owner's own document names.
UUID_SCHEMA: dict[str, Any] = {"type": "string", "pattern": UUID_PATTERN}
PATH_SCHEMAS: dict[str, dict[str, Any]] = {
    "document_id": {"type": "string", "pattern": CONTEXT_ID_PATTERN},
}

# Query parameters as strict as the server reads them (app.api.edge.query_value): each at most once, never
# empty, no control characters. A cursor is opaque: only what `next_cursor` returned (base64url).
QUERY_SCHEMAS: dict[str, dict[str, Any]] = {
    "owner": UUID_SCHEMA,
    "kind": {"type": "string", **KIND_SCHEMA},
    "cursor": {
        "type": "string",
        "pattern": "^[A-Za-z0-9_-]+$",
        "description": "`next_cursor` of the last page",
    },
    "limit": {"type": "integer", "minimum": 1, "maximum": 100},
    "direction": {"type": "string", "enum": ["given", "received"], "default": "given"},
}


# Statuses every route of a kind can answer, from the edge (app/api/edge.py) and the auth check, so no
# operation forgets one: 401 on user routes, 404 for ids that are not UUIDs, 400/413 wherever a body is read.
def _implied_statuses(op: Operation) -> dict[int, type[BaseModel] | None]:
    implied: dict[int, type[BaseModel] | None] = {}
    if op.auth:
        implied[401] = ErrorResponse
        implied[503] = ErrorResponse  # every user route reads the database: unavailable → 503, Retry-After
    if _path_parameters(op.path):
        implied[404] = ErrorResponse
    if op.body is not None or op.method == "post":
        implied[400] = ErrorResponse
        implied[413] = ErrorResponse
    if op.query:
        implied[422] = ErrorResponse
    return implied


def _operation_id(op: Operation) -> str:
    words = [part.strip("{}") for part in op.path.split("/") if part and part != "v1"]
    return "_".join([op.method, *words]).replace(".", "_").replace("-", "_")


def _operation(op: Operation, ref_of: dict[type[BaseModel], Any]) -> dict[str, Any]:
    spec: dict[str, Any] = {"operationId": _operation_id(op), "summary": op.summary, "responses": {}}
    for status, model in sorted({**_implied_statuses(op), **op.responses}.items()):
        response: dict[str, Any] = {"description": HTTPStatus(status).phrase}
        if model is not None:
            response["content"] = {"application/json": {"schema": ref_of[model]}}
        spec["responses"][str(status)] = response
    if op.body is not None:
        spec["requestBody"] = {"required": True, "content": {"application/json": {"schema": ref_of[op.body]}}}
    parameters = [
        {"name": name, "in": "path", "required": True, "schema": PATH_SCHEMAS.get(name, UUID_SCHEMA)}
        for name in _path_parameters(op.path)
    ] + [
        {
            "name": name,
            "in": "query",
            "required": False,
            "schema": QUERY_SCHEMAS.get(name, {"type": "string"}),
        }
        for name in op.query
    ]
    if parameters:
        spec["parameters"] = parameters
    spec["security"] = [{"bearer": []}] if op.auth else []
    return spec


def _path_parameters(path: str) -> list[str]:
    return [part[1:-1] for part in path.split("/") if part.startswith("{")]


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(openapi_document())


def main() -> None:
    """`python -m app.api.openapi`: the document on stdout, for the generated TypeScript client
    (`clients/typescript`, `npm run generate`)."""
    json.dump(openapi_document(), sys.stdout, indent=2)
    sys.stdout.write("\n")


if __name__ == "__main__":
    main()
