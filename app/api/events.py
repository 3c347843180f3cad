"""`POST /v1/events/s3`: the store tells us an object exists.

Two senders: SNS (signed envelopes, verified against AWS's certificate) and direct webhooks such as MinIO's
(a shared bearer token). Either way the answer is 2xx only once every record is durably handled, and 503 when
the queue cannot take a job, so the sender retries instead of dropping the event.
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
from app.events.sns import SnsRejectCode, SnsRejected
from app.intake import QueueUnavailable, accept_record
from schemas.events import S3Event, SnsEnvelope

bp = Blueprint("events", __name__, url_prefix="/v1/events")
log = logging.getLogger(__name__)

SNS_TYPE_HEADER = "x-amz-sns-message-type"
RETRYABLE_SNS_CODES = frozenset({SnsRejectCode.CERT_UNAVAILABLE, SnsRejectCode.CONFIRMATION_FAILED})


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
        if rejected.code in RETRYABLE_SNS_CODES:  # our side could not check it: let SNS retry
            raise ApiError(503, rejected.code.value, rejected.message, {"Retry-After": "5"}) from None
        raise ApiError(403, rejected.code.value, rejected.message) from None
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


def _parse_event(body: str) -> S3Event:
    try:
        return S3Event.model_validate_json(body)
    except ValidationError:
        raise ApiError(400, "invalid_event", "body is not an S3 event notification") from None


def _accept(event: S3Event, source: str) -> Response:
    if event.event == "s3:TestEvent":
        log.info("s3 test event acknowledged", extra={"source": source, "stage": "intake"})
        return jsonify({"accepted": 0, "outcomes": []})
    try:
        outcomes = [accept_record(services(), record, source) for record in event.records]
    except QueueUnavailable:
        metrics.events_received(services(), source, ["unavailable"])
        raise ApiError(
            503, "queue_unavailable", "cannot queue the upload now; retry", {"Retry-After": "5"}
        ) from None
    metrics.events_received(services(), source, [outcome.value for outcome in outcomes])
    return jsonify({"accepted": len(outcomes), "outcomes": [outcome.value for outcome in outcomes]})
