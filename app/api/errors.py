"""Every error leaves as `{"error": {"code", "message"}}` with a stable code."""

from __future__ import annotations

import logging

from botocore.exceptions import BotoCoreError, ClientError
from flask import Flask, Response, jsonify, request
from pydantic import ValidationError
from sqlalchemy.exc import DBAPIError, InterfaceError, OperationalError
from werkzeug.exceptions import HTTPException

log = logging.getLogger(__name__)


class ApiError(Exception):
    def __init__(self, status: int, code: str, message: str, headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status = status
        self.code = code
        self.message = message
        self.headers = headers or {}


def error_response(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Response:
    response = jsonify({"error": {"code": code, "message": message}})
    response.status_code = status
    response.headers.update(headers or {})
    return response


def not_found() -> ApiError:
    """The same answer whether the thing is missing or merely not the caller's: existence is not leaked."""
    return ApiError(404, "not_found", "no such upload")


def _validation_message(error: ValidationError) -> str:
    parts = []
    for item in error.errors(include_url=False):
        where = ".".join(str(part) for part in item["loc"]) or "body"
        parts.append(f"{where}: {item['msg']}")
    return "; ".join(parts)


def register_error_handlers(app: Flask) -> None:
    @app.errorhandler(ApiError)
    def _api_error(error: ApiError) -> Response:
        return error_response(error.status, error.code, error.message, error.headers)

    @app.errorhandler(ValidationError)
    def _invalid(error: ValidationError) -> Response:
        return error_response(422, "invalid_request", _validation_message(error))

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> Response:
        code = (error.name or "error").lower().replace(" ", "_")
        return error_response(error.code or 500, code, error.description or error.name)

    @app.errorhandler(DBAPIError)
    def _database(error: DBAPIError) -> Response:
        # The database is unreachable or dropped the connection: retryable (SNS and the app retry on 503). The
        # session rolled back, so nothing was half-applied. Anything else from the database is a bug: 500.
        if not isinstance(error, OperationalError | InterfaceError) and not error.connection_invalidated:
            return _unexpected(error)
        reason = (str(error.orig or error).splitlines() or ["?"])[0]
        log.error("database unavailable on %s %s: %s", request.method, request.path, reason)
        return error_response(
            503, "service_unavailable", "database unavailable; retry shortly", {"Retry-After": "5"}
        )

    @app.errorhandler(BotoCoreError)
    @app.errorhandler(ClientError)
    def _store(error: Exception) -> Response:
        # S3 unreachable, timing out or answering 5xx: retryable, and every request is safe to repeat (a
        # DELETE whose record already says `deleted` deletes what is left). Any other S3 refusal is a bug: 500.
        if (
            isinstance(error, ClientError)
            and error.response.get("ResponseMetadata", {}).get("HTTPStatusCode", 0) < 500
        ):
            return _unexpected(error)
        log.error("store unavailable on %s %s: %s", request.method, request.path, error)
        return error_response(
            503,
            "store_unavailable",
            "the store did not answer; repeat the request shortly",
            {"Retry-After": "5"},
        )

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> Response:
        log.exception("unhandled error")
        return error_response(500, "internal_error", "internal error; it has been logged")
