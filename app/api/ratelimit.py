"""Per-user rate limits on ticket requests (flask-limiter, counters in Redis so all API processes share them).

Keyed by the authenticated user, not the IP: mobile users share carrier NAT addresses. If Redis is down the
limiter lets requests through (`swallow_errors`) — the ticket itself still works, and the webhook's 503 is
what protects uploads then.
"""

from __future__ import annotations

import math

from flask import Flask, Response
from flask_limiter import Limiter, RateLimitExceeded

from app.api.context import current_principal, services
from app.api.errors import ApiError, error_response


def _user_key() -> str:
    # Runs before the view: a caller without a valid token must get the view's clean 401, not a traceback here.
    try:
        return f"user:{current_principal().user_id}"
    except ApiError:
        return "anonymous"


limiter = Limiter(key_func=_user_key, headers_enabled=True, swallow_errors=True, default_limits=[])


def ticket_rate_limit() -> str:
    return services().settings.ticket_rate_limit


def init_rate_limits(app: Flask, redis_url: str) -> None:
    app.config["RATELIMIT_STORAGE_URI"] = redis_url
    app.config["RATELIMIT_KEY_PREFIX"] = "broker-ratelimit"
    limiter.init_app(app)

    @app.errorhandler(RateLimitExceeded)
    def _rate_limited(error: RateLimitExceeded) -> Response:
        reset_in = getattr(error, "retry_after", None)
        headers = {"Retry-After": str(math.ceil(reset_in))} if reset_in else {}
        return error_response(
            429, "rate_limited", f"too many upload tickets: limit {error.description}", headers
        )
