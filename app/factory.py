"""The Flask application factory."""

from __future__ import annotations

from flask import Flask

from app.config import Settings, get_settings
from app.services import Services


def create_app(settings: Settings | None = None, services: Services | None = None) -> Flask:
    """The Flask app. Tests pass their own settings; processes read them from the environment."""
    from app.api import demo, documents, events, grants, health, media, metrics, multipart, openapi, uploads
    from app.api.cors import init_cors
    from app.api.edge import IdConverter, init_edge
    from app.api.errors import register_error_handlers
    from app.api.ratelimit import init_rate_limits

    app = Flask(__name__, static_folder=None)
    app.json.sort_keys = False  # type: ignore[attr-defined]
    broker = services or Services(settings or get_settings())
    app.extensions["broker"] = broker
    app.url_map.converters["id"] = IdConverter  # before the blueprints: their routes use it
    for blueprint in (
        uploads.bp,
        multipart.bp,
        media.bp,
        documents.bp,
        grants.bp,
        events.bp,
        health.bp,
        openapi.bp,
        metrics.bp,
    ):
        app.register_blueprint(blueprint)
    if broker.settings.demo_dir is not None:
        app.register_blueprint(demo.blueprint(broker.settings.demo_dir))
    register_error_handlers(app)
    init_edge(app, broker.settings.max_request_bytes)
    init_rate_limits(app)
    init_cors(app, broker.settings.cors_origins)
    return app
