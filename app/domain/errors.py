"""The API's error codes, each tied to its one HTTP status (one catalogue, as in STYLE.md's Supabase model).

Codes are stable: clients and dashboards key on them. Content rejections of an upload (reported in its status,
not as an HTTP error) are `app.domain.rejections.RejectionCode`.
"""

from __future__ import annotations

from enum import StrEnum


class ErrorCode(StrEnum):
    INVALID_JSON = "invalid_json"
    INVALID_EVENT = "invalid_event"
    INVALID_SNS_MESSAGE = "invalid_sns_message"
    INVALID_RECORD = "invalid_record"  # an event record with a field no S3 event carries (length, characters)
    UNAUTHORIZED = "unauthorized"
    # SNS messages refused (app.events.sns.SnsRejectCode): not retried by SNS, except the two 503s below
    INVALID_SIGNATURE = "invalid_signature"
    UNTRUSTED_CERT_HOST = "untrusted_cert_host"
    UNTRUSTED_CERT = "untrusted_cert"  # not a certificate, no chain to a trusted root, or not issued to SNS
    CERT_NOT_FOUND = "cert_not_found"  # the trusted host has no such certificate
    STALE_MESSAGE = "stale_message"  # Timestamp more than an hour old: a replay
    UNKNOWN_TOPIC = "unknown_topic"
    FORBIDDEN_KIND = "forbidden_kind"
    NOT_FOUND = "not_found"
    METHOD_NOT_ALLOWED = "method_not_allowed"
    UPLOAD_IN_PROGRESS = "upload_in_progress"
    NOT_READY = "not_ready"  # the owner asked for media whose upload is still in flight (its `status` said)
    NOT_MULTIPART = "not_multipart"  # parts asked of an upload with a POST ticket
    UPLOAD_CLOSED = "upload_closed"  # parts asked of an upload completed, cancelled or expired
    SIZE_MISMATCH = "size_mismatch"  # completion with parts that do not add up to the declared size
    TOO_LARGE = "too_large"
    QUOTA_EXCEEDED = "quota_exceeded"
    REQUEST_TOO_LARGE = "request_too_large"
    UNSUPPORTED_TYPE = "unsupported_type"
    INVALID_REQUEST = "invalid_request"
    RATE_LIMITED = "rate_limited"
    INTERNAL_ERROR = "internal_error"
    QUEUE_UNAVAILABLE = "queue_unavailable"
    CERT_UNAVAILABLE = "cert_unavailable"  # the SNS signing certificate could not be fetched now; SNS retries
    CONFIRMATION_FAILED = "confirmation_failed"  # the SubscribeURL visit failed; SNS resends the confirmation
    SERVICE_UNAVAILABLE = "service_unavailable"
    STORE_UNAVAILABLE = (
        "store_unavailable"  # S3 did not answer (or answered 5xx); the request is safe to repeat
    )
    DEMO_NOT_BUILT = "demo_not_built"  # /demo is on but `web/` was never built (`make npm-projects`)

    @property
    def status(self) -> int:
        return STATUS[self]


STATUS: dict[ErrorCode, int] = {
    ErrorCode.INVALID_JSON: 400,
    ErrorCode.INVALID_EVENT: 400,
    ErrorCode.INVALID_SNS_MESSAGE: 400,
    ErrorCode.INVALID_RECORD: 422,
    ErrorCode.UNAUTHORIZED: 401,
    ErrorCode.INVALID_SIGNATURE: 403,
    ErrorCode.UNTRUSTED_CERT_HOST: 403,
    ErrorCode.UNTRUSTED_CERT: 403,
    ErrorCode.CERT_NOT_FOUND: 403,
    ErrorCode.STALE_MESSAGE: 403,
    ErrorCode.UNKNOWN_TOPIC: 403,
    ErrorCode.FORBIDDEN_KIND: 403,
    ErrorCode.NOT_FOUND: 404,
    ErrorCode.METHOD_NOT_ALLOWED: 405,
    ErrorCode.UPLOAD_IN_PROGRESS: 409,
    ErrorCode.NOT_READY: 409,
    ErrorCode.NOT_MULTIPART: 409,
    ErrorCode.UPLOAD_CLOSED: 409,
    ErrorCode.SIZE_MISMATCH: 422,
    ErrorCode.TOO_LARGE: 413,
    ErrorCode.QUOTA_EXCEEDED: 413,
    ErrorCode.REQUEST_TOO_LARGE: 413,
    ErrorCode.UNSUPPORTED_TYPE: 415,
    ErrorCode.INVALID_REQUEST: 422,
    ErrorCode.RATE_LIMITED: 429,
    ErrorCode.INTERNAL_ERROR: 500,
    ErrorCode.QUEUE_UNAVAILABLE: 503,
    ErrorCode.CERT_UNAVAILABLE: 503,
    ErrorCode.CONFIRMATION_FAILED: 503,
    ErrorCode.SERVICE_UNAVAILABLE: 503,
    ErrorCode.STORE_UNAVAILABLE: 503,
    ErrorCode.DEMO_NOT_BUILT: 503,
}
