"""`POST /v1/events/s3`: the store tells us an object exists.

Two senders: SNS (signed envelopes, verified against AWS's certificate) and direct webhooks such as MinIO's
(a shared bearer token). Either way the answer is 2xx only once every record is durably handled, and 503 when
the queue cannot take a job, so the sender retries instead of dropping the event.

Records are checked one by one before the database sees them (`schemas.events.S3EventRecord`: lengths,
characters, the decoded key). A record that fails is refused; the event's other records are still handled
exactly as they would be alone (queued, duplicate or ignored), and the answer is then 422 `invalid_record`
with every record's outcome, so the refusal is visible and nothing valid is dropped. A retry is safe: the
handled records are duplicates by then.
"""

from __future__ import annotations

import hmac
import json
import logging

from flask import Blueprint, Response, jsonify, request
from pydantic import ValidationError

from app import metrics
from app.api.context import services
from app.api.errors import ApiError
from app.domain.errors import ErrorCode
from app.events.sns import SnsRejectCode, SnsRejected
from app.intake import QueueUnavailable, accept_record
from schemas.events import RawS3Event, S3EventRecord, SnsEnvelope

bp = Blueprint("events", __name__, url_prefix="/v1/events")
log = logging.getLogger(__name__)

SNS_TYPE_HEADER = "x-amz-sns-message-type"
RETRYABLE_SNS_CODES = frozenset({SnsRejectCode.CERT_UNAVAILABLE, SnsRejectCode.CONFIRMATION_FAILED})
INVALID = "invalid"  # the outcome of a refused record


@bp.post("/s3")
def s3_event() -> Response:
    body = request.get_data(as_text=True)
    message = _sns_message(body)
    if message is not None:
        return _from_sns(message)
    _require_webhook_token()
    return _accept(_parse_event(body), source="webhook")


def _sns_message(body: str) -> dict[str, object] | None:
    """The SNS envelope, if this is one. AWS marks it with a header; moto does not, so the body counts too.
    Either way an SNS-shaped body is only ever accepted with a valid signature."""
    try:
        parsed = json.loads(body)
    except ValueError:
        parsed = None
    looks_like_sns = isinstance(parsed, dict) and "Type" in parsed and "Signature" in parsed
    if SNS_TYPE_HEADER not in request.headers and not looks_like_sns:
        return None
    if not isinstance(parsed, dict):
        raise ApiError(400, "invalid_sns_message", "body is not an SNS message")
    return parsed


def _from_sns(message: dict[str, object]) -> Response:
    try:
        envelope = SnsEnvelope.model_validate(message)
    except ValidationError:
        raise ApiError(400, "invalid_sns_message", "body is not an SNS message") from None
    verifier = services().sns
    try:
        if envelope.type == "SubscriptionConfirmation":
            verifier.confirm_subscription(message)
            log.info("sns subscription confirmed", extra={"topic": envelope.topic_arn, "stage": "intake"})
            return jsonify({"confirmed": True})
        verifier.verify(message)
    except SnsRejected as rejected:
        log.warning("sns message refused", extra={"code": rejected.code.value, "stage": "intake"})
        outcome = "unavailable" if rejected.code in RETRYABLE_SNS_CODES else "refused"
        metrics.events_received(services(), "sns", [outcome])
        code = ErrorCode(rejected.code.value)
        headers = {"Retry-After": "5"} if rejected.code in RETRYABLE_SNS_CODES else None  # SNS may retry
        raise ApiError(code.status, code.value, rejected.message, headers) from None
    if envelope.type != "Notification":
        return jsonify({"accepted": 0})
    return _accept(_parse_event(envelope.message), source="sns")


def _require_webhook_token() -> None:
    expected = services().settings.webhook_token
    scheme, _, given = request.headers.get("Authorization", "").partition(" ")
    if (
        not expected
        or scheme.lower() != "bearer"
        or not hmac.compare_digest(given.encode(), expected.encode())
    ):
        metrics.events_received(services(), "webhook", ["refused"])
        raise ApiError(401, "unauthorized", "webhook token missing or wrong", {"WWW-Authenticate": "Bearer"})


def _parse_event(body: str) -> RawS3Event:
    try:
        return RawS3Event.model_validate_json(body)
    except ValidationError:
        raise ApiError(400, "invalid_event", "body is not an S3 event notification") from None


def _accept(event: RawS3Event, source: str) -> Response:
    if event.event == "s3:TestEvent":
        log.info("s3 test event acknowledged", extra={"source": source, "stage": "intake"})
        return jsonify({"accepted": 0, "outcomes": []})
    outcomes: list[str] = []
    refusals: list[str] = []
    try:
        for index, raw in enumerate(event.records):
            try:
                record = S3EventRecord.model_validate(raw)
            except ValidationError as error:
                refusals.append(f"Records[{index}]: {_first_problem(error)}")
                outcomes.append(INVALID)
                continue
            outcomes.append(accept_record(services(), record, source).value)
    except QueueUnavailable:
        metrics.events_received(services(), source, ["unavailable"])
        raise ApiError(
            503, "queue_unavailable", "cannot queue the upload now; retry", {"Retry-After": "5"}
        ) from None
    metrics.events_received(services(), source, outcomes)
    if refusals:
        log.warning(
            "event records refused",
            extra={"source": source, "stage": "intake", "outcome": INVALID, "refused": refusals},
        )
        code = ErrorCode.INVALID_RECORD
        handled = len(outcomes) - len(refusals)
        message = f"{'; '.join(refusals)} (the other {handled} record(s) were handled)"
        response = jsonify(
            {"error": {"code": code.value, "message": message}, "accepted": handled, "outcomes": outcomes}
        )
        response.status_code = code.status
        return response
    return jsonify({"accepted": len(outcomes), "outcomes": outcomes})


def _first_problem(error: ValidationError) -> str:
    """Where and what, without echoing the (possibly 200 KB, possibly binary) value back."""
    item = error.errors(include_url=False, include_input=False)[0]
    where = ".".join(str(part) for part in item["loc"]) or "record"
    return f"{where}: {item['msg']}"[:300]
