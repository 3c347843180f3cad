"""CORS for the browser client: the app's own origins (`BROKER_CORS_ORIGINS`) may call the API, preflight
included; no origin is allowed by default (the mobile app needs none).

Only the API's `/v1/` routes answer CORS; errors carry the headers too, so a web page can read the error's
code (a 401 or a 429 with `Retry-After`) instead of an opaque network failure.
"""

from __future__ import annotations

from flask import Flask
from flask_cors import CORS

# What a browser needs to read beyond the CORS-safelisted response headers.
EXPOSED_HEADERS = [
    "Retry-After",
    "X-RateLimit-Limit",
    "X-RateLimit-Remaining",
    "X-RateLimit-Reset",
    "Location",
]
PREFLIGHT_MAX_AGE_SECONDS = 600


def init_cors(app: Flask, origins: tuple[str, ...]) -> None:
    if not origins:
        return
    CORS(
        app,
        resources={r"/v1/*": {"origins": list(origins)}},
        methods=["GET", "POST", "DELETE"],
        allow_headers=["Authorization", "Content-Type"],
        expose_headers=EXPOSED_HEADERS,
        max_age=PREFLIGHT_MAX_AGE_SECONDS,
        vary_header=True,
    )
