"""CORS for the browser client, over real HTTP: configured origins get preflight answers and readable
responses (errors included); other origins get no CORS headers; none are allowed by default."""

from __future__ import annotations

import requests

APP = "https://app.fitness.example"


def preflight(url: str, origin: str) -> requests.Response:
    headers = {
        "Origin": origin,
        "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization, content-type",
    }
    return requests.options(f"{url}/v1/uploads", headers=headers, timeout=10)


def test_the_app_origin_may_call_the_api_from_a_browser(serve_with, alice):
    api = serve_with(cors_origins=(APP,))

    answer = preflight(api.url, APP)
    assert answer.status_code == 200
    assert answer.headers["Access-Control-Allow-Origin"] == APP
    assert "POST" in answer.headers["Access-Control-Allow-Methods"]
    assert {"authorization", "content-type"} <= {
        h.strip().lower() for h in answer.headers["Access-Control-Allow-Headers"].split(",")
    }
    body = {"kind": "avatar", "content_type": "image/jpeg", "size": 1000}
    ticket = requests.post(
        f"{api.url}/v1/uploads", json=body, headers={**alice.headers, "Origin": APP}, timeout=10
    )
    assert ticket.status_code == 201
    assert ticket.headers["Access-Control-Allow-Origin"] == APP
    refused = requests.post(f"{api.url}/v1/uploads", json=body, headers={"Origin": APP}, timeout=10)
    assert refused.status_code == 401  # the page can read the error's code
    assert refused.headers["Access-Control-Allow-Origin"] == APP
    assert "Retry-After" in refused.headers["Access-Control-Expose-Headers"]


def test_other_origins_and_the_default_get_no_cors(serve_with, api):
    allowed = serve_with(cors_origins=(APP,))
    assert "Access-Control-Allow-Origin" not in preflight(allowed.url, "https://evil.example").headers
    assert "Access-Control-Allow-Origin" not in preflight(api.url, APP).headers  # default: no origin
