"""Liveness and readiness."""

from __future__ import annotations

import logging
from collections.abc import Callable

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from app.api.context import services

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    s = services()

    def database() -> None:
        with s.db.session() as session:
            session.execute(text("SELECT 1"))

    checks: dict[str, Callable[[], object]] = {
        "database": database,
        "redis": s.redis.ping,
        "s3": s.storage.check,
    }
    report = {name: _probe(name, check) for name, check in checks.items()}
    ready = all(result == "ok" for result in report.values())
    return jsonify({"status": "ready" if ready else "unavailable", "checks": report}), 200 if ready else 503


def _probe(name: str, check: Callable[[], object]) -> str:
    try:
        check()
    except Exception as error:
        log.warning("readiness check failed", extra={"check": name, "error": str(error)})
        return f"error: {type(error).__name__}"
    return "ok"
