"""The browser demo page at /demo: the built bundle of `web/` (Uppy on the broker's tickets), served as files.

Only registered when `BROKER_DEMO_DIR` is set (`broker dev` sets it; production does not), so a deployed
broker has no such route. The page is a plain client of the public API on the same origin: it holds no secret
and gets no privilege from being served here; the user pastes a token (or follows the link `broker dev`
prints, which carries the dev token in the URL fragment, never sent to a server).

A bundle that was never built is a 503 `demo_not_built` that says how to build it, not a bare 404.
"""

from __future__ import annotations

from pathlib import Path

from flask import Blueprint, Response, send_from_directory

from app.api.errors import ApiError

INDEX = "index.html"
# Vite names every asset after its content hash, so an asset URL never changes meaning: cache it for good.
IMMUTABLE = "public, max-age=31536000, immutable"
BUILD_HINT = "run `make npm-projects` (or `cd web && npm ci && npm run build`) and reload"


def blueprint(bundle: Path) -> Blueprint:
    """The /demo routes serving the files under `bundle` (normally `web/dist`)."""
    bp = Blueprint("demo", __name__)
    root = bundle.resolve()

    @bp.get("/demo/")
    def page() -> Response:
        if not (root / INDEX).is_file():
            raise ApiError(503, "demo_not_built", f"the demo page is not built in {root}: {BUILD_HINT}")
        response = send_from_directory(root, INDEX, max_age=0)
        response.headers["Cache-Control"] = "no-cache"  # a rebuilt bundle shows on the next reload
        return _hardened(response)

    @bp.get("/demo/<path:name>")
    def asset(name: str) -> Response:
        # send_from_directory refuses any path that leaves `root` (`../`, absolute) with a 404.
        response = send_from_directory(root, name)
        if name.startswith("assets/"):
            response.headers["Cache-Control"] = IMMUTABLE
        return _hardened(response)

    return bp


def _hardened(response: Response) -> Response:
    response.headers["X-Content-Type-Options"] = "nosniff"
    # The page holds a bearer token: never tell another site where it came from.
    response.headers["Referrer-Policy"] = "no-referrer"
    return response
