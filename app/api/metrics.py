"""`GET /metrics`: the whole service's metrics in Prometheus text format, whichever API process answers.

The numbers live in Redis (see `app.metrics`), so this endpoint only reads them. It also counts ticket
refusals, by watching the answers of `POST /v1/uploads`: refusals leave through several doors (validation,
kind rules, authentication, rate limiting, quotas), and every one of them ends as a 4xx with a stable error
code, so counting answers catches them all, including refusals added later, without touching their code.
"""

from __future__ import annotations

from flask import Blueprint, Response, request
from prometheus_client import CollectorRegistry
from prometheus_client.exposition import choose_encoder

from app import metrics
from app.api.context import services

bp = Blueprint("metrics", __name__)

TICKET_ENDPOINT = "uploads.create_upload"


@bp.get("/metrics")
def metrics_text() -> Response:
    services().pending_metrics.flush()  # this process's own counts, so they are never a second late here
    # A registry per scrape: the collector holds no state, and each app (tests make several) has its own.
    registry = CollectorRegistry(auto_describe=False)
    registry.register(metrics.RedisCollector(services()))
    # The format the scraper asks for (Prometheus' text 0.0.4 by default, OpenMetrics on request).
    encode, content_type = choose_encoder(request.headers.get("Accept", ""))
    return Response(encode(registry), headers={"Content-Type": content_type})


@bp.after_app_request
def count_ticket_refusals(response: Response) -> Response:
    if request.endpoint == TICKET_ENDPOINT and 400 <= response.status_code < 500:
        body = response.get_json(silent=True) if response.is_json else None
        error = body.get("error") if isinstance(body, dict) else None
        code = error.get("code") if isinstance(error, dict) else None
        metrics.ticket_refused(services(), code if isinstance(code, str) else f"http_{response.status_code}")
    return response
