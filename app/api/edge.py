"""Refusals at the edge, before a route reads a body or touches the database.

- Bodies: refused by `Content-Length` before reading (413 `request_too_large`) and, for chunked bodies without
  one, by Werkzeug's streaming limit (`max_content_length`), so a 300 MB body is never held in memory. The cap is
  `BROKER_MAX_REQUEST_BYTES` (64 KiB); the S3/SNS webhook gets `WEBHOOK_MAX_BYTES` because an SNS notification
  may be up to 256 KB, and `complete` gets `COMPLETE_MAX_BYTES` if larger: what the parts its schema allows take.
- JSON: a body that is not a JSON object, or is nested absurdly deep, is 400 `invalid_json` (never a 500); a
  body that is one is read strictly by its model (`parse_body`: no coercion of `true`, `"1000"` or `1.0`).
- Query values: control characters, an empty value (`owner=`), a repeated parameter and a parameter the
  operation does not document (`?kin=avatar`) are 422 `invalid_request`: an empty value is not "absent", two
  values are not one, and a typo is not silently "everything".
- Ids in paths: anything but a UUID is 404 `not_found` from routing itself, so it never reaches a query.
- Unknown methods (TRACE, …): 405 with `Allow` in the JSON shape.
"""

from __future__ import annotations

import json
import re
from typing import Any, TypeVar

from flask import Flask, Response, request
from pydantic import BaseModel
from werkzeug.exceptions import MethodNotAllowed, RequestEntityTooLarge
from werkzeug.routing import BaseConverter

from app.api.errors import ApiError, error_response
from app.domain.errors import ErrorCode
from schemas.uploads import COMPLETE_MAX_BYTES

WEBHOOK_MAX_BYTES = 300 * 1024  # SNS messages are < 256 KB; room for the envelope's own fields
WEBHOOK_ENDPOINT = "events.s3_event"
COMPLETE_ENDPOINT = "multipart.complete"
Model = TypeVar("Model", bound=BaseModel)
MAX_JSON_DEPTH = 32  # our bodies nest 3 levels; 32 leaves room and keeps the parser far from recursion limits
_CONTROL = re.compile(r"[\x00-\x1f\x7f]")


class IdConverter(BaseConverter):
    """A canonical (lower-case, dashed) UUID; anything else does not route (404)."""

    regex = r"[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}"

    def to_python(self, value: str) -> str:
        return value.lower()


def body_cap(max_request_bytes: int) -> int:
    if request.endpoint == WEBHOOK_ENDPOINT:
        return max(max_request_bytes, WEBHOOK_MAX_BYTES)
    if request.endpoint == COMPLETE_ENDPOINT:
        return max(max_request_bytes, COMPLETE_MAX_BYTES)
    return max_request_bytes


def parse_body(model: type[Model]) -> Model:
    """The request's JSON object (400 `invalid_json` otherwise) read by `model` from the JSON text itself, so
    strict models apply JSON's types (422 `invalid_request` with the field on a mismatch)."""
    json_body()
    return model.model_validate_json(request.get_data(cache=True))


def json_body() -> dict[str, Any]:
    """The request's JSON object, or 400 `invalid_json` (not JSON, not an object, too deep)."""
    raw = request.get_data(cache=True)
    try:
        if _depth_exceeds(raw, MAX_JSON_DEPTH):
            raise ValueError("nested too deep")
        parsed = json.loads(raw)
    except (ValueError, RecursionError) as error:
        raise _error(ErrorCode.INVALID_JSON, f"body is not valid JSON: {error}") from None
    if not isinstance(parsed, dict):
        raise _error(ErrorCode.INVALID_JSON, "body must be a JSON object")
    return parsed


def _depth_exceeds(raw: bytes, limit: int) -> bool:
    """Bracket depth outside strings, counted without parsing (a deep document never reaches the parser)."""
    if raw.count(b"[") + raw.count(b"{") <= limit:  # every ordinary body: no byte-by-byte walk
        return False
    depth, in_string, escaped = 0, False, False
    for byte in raw:
        if in_string:
            if escaped:
                escaped = False
            elif byte == 0x5C:  # backslash
                escaped = True
            elif byte == 0x22:
                in_string = False
        elif byte == 0x22:
            in_string = True
        elif byte in (0x5B, 0x7B):
            depth += 1
            if depth > limit:
                return True
        elif byte in (0x5D, 0x7D):
            depth -= 1
    return False


def query_value(name: str) -> str | None:
    """A query parameter, or None when absent. Control characters (NUL included), an empty value and a
    repeated parameter are 422 before they reach a query: `owner=` is not "me", `kind=` is not "any kind"."""
    values = request.args.getlist(name)
    if not values:
        return None
    if len(values) > 1:
        raise _error(ErrorCode.INVALID_REQUEST, f"{name} given {len(values)} times; give it once")
    value = values[0]
    if value == "":
        raise _error(ErrorCode.INVALID_REQUEST, f"{name} is empty; leave it out instead")
    if _CONTROL.search(value):
        raise _error(ErrorCode.INVALID_REQUEST, f"{name} contains control characters")
    return value


def _error(code: ErrorCode, message: str) -> ApiError:
    return ApiError(code.status, code.value, message)


def _response(code: ErrorCode, message: str, headers: dict[str, str] | None = None) -> Response:
    return error_response(code.status, code.value, message, headers)


_PATH_PARAMETER = re.compile(r"<(?:[^:<>]+:)?([^<>]+)>")


def _documented_queries() -> dict[tuple[str, str], frozenset[str]]:
    """(method, OpenAPI path) → the query parameters the document names, for every user operation."""
    from app.api.openapi import OPERATIONS  # the document is built from the schemas; edge is imported first

    return {(op.method.upper(), op.path): frozenset(op.query) for op in OPERATIONS if op.auth}


def _check_query_names(documented: dict[tuple[str, str], frozenset[str]]) -> None:
    rule = request.url_rule
    if rule is None:
        return
    allowed = documented.get((request.method, _PATH_PARAMETER.sub(r"{\1}", rule.rule)))
    if allowed is None:
        return
    unknown = sorted(set(request.args) - allowed)
    if unknown:
        named = ", ".join(repr(name)[:40] for name in unknown[:3])
        raise _error(
            ErrorCode.INVALID_REQUEST,
            f"unknown query parameter(s) {named}; this operation takes "
            f"{', '.join(sorted(allowed)) or 'none'}",
        )


def init_edge(app: Flask, max_request_bytes: int) -> None:
    documented = _documented_queries()

    @app.before_request
    def _query_names() -> None:
        _check_query_names(documented)

    @app.before_request
    def _cap_body() -> None:
        cap = body_cap(max_request_bytes)
        request.max_content_length = cap  # the streaming limit for chunked bodies
        if request.content_length is not None and request.content_length > cap:
            raise _error(ErrorCode.REQUEST_TOO_LARGE, f"request body over {cap} bytes")
        if request.content_length is None and request.environ.get("wsgi.input_terminated"):
            # A chunked body: Werkzeug's limited stream returns the first `cap` bytes silently and raises only
            # on the next read. Read it now (cached for the view) and probe once, so a longer body is a 413.
            request.get_data(cache=True)
            request.stream.read(1)

    @app.errorhandler(RequestEntityTooLarge)
    def _too_large(error: RequestEntityTooLarge) -> Response:
        return _response(ErrorCode.REQUEST_TOO_LARGE, "request body too large")

    @app.errorhandler(MethodNotAllowed)
    def _method(error: MethodNotAllowed) -> Response:
        allowed = ", ".join(sorted(error.valid_methods or []))
        return _response(ErrorCode.METHOD_NOT_ALLOWED, "method not allowed", {"Allow": allowed})

    @app.errorhandler(RecursionError)
    def _deep(error: RecursionError) -> Response:
        return _response(ErrorCode.INVALID_JSON, "body nested too deep")
