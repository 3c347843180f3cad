"""Liveness and readiness.

`/readyz` answers within `READY_DEADLINE_SECONDS` whatever is down: the checks run at once on threads of
their own, and one that has not answered by the deadline is reported as `timeout` (a stalled S3 or a
SIGSTOPped Redis must make the probe say so, not hang the load balancer's request). A check still running
from an earlier probe is not started again: a long outage holds at most one thread per check.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
from concurrent.futures import Future, ThreadPoolExecutor, wait

from flask import Blueprint, Response, jsonify
from sqlalchemy import text

from app.api.context import services

bp = Blueprint("health", __name__)
log = logging.getLogger(__name__)

READY_DEADLINE_SECONDS = 2.0
_checks_pool = ThreadPoolExecutor(max_workers=6, thread_name_prefix="readyz")
_running: dict[str, Future[str]] = {}  # the check of each name still in flight, if any
_running_lock = threading.Lock()


@bp.get("/healthz")
def healthz() -> Response:
    return jsonify({"status": "ok"})


@bp.get("/readyz")
def readyz() -> tuple[Response, int]:
    s = services()

    def database() -> None:
        with s.db.session() as session:
            session.execute(text("SELECT 1"))

    # Lambdas: even building a client (boto3's takes a while on a busy machine) happens within the deadline.
    checks: dict[str, Callable[[], object]] = {
        "database": database,
        "redis": lambda: s.redis.ping(),
        "s3": lambda: s.storage.check(),
    }
    futures = {name: _start(name, check) for name, check in checks.items()}
    wait(futures.values(), timeout=READY_DEADLINE_SECONDS)
    report = {name: _outcome(name, future) for name, future in futures.items()}
    ready = all(result == "ok" for result in report.values())
    return jsonify({"status": "ready" if ready else "unavailable", "checks": report}), 200 if ready else 503


def _start(name: str, check: Callable[[], object]) -> Future[str]:
    with _running_lock:
        running = _running.get(name)
        if running is None or running.done():
            running = _running[name] = _checks_pool.submit(_probe, name, check)
        return running


def _outcome(name: str, future: Future[str]) -> str:
    if future.done():
        return future.result()
    log.warning("readiness check timed out", extra={"check": name, "seconds": READY_DEADLINE_SECONDS})
    return "timeout"


def _probe(name: str, check: Callable[[], object]) -> str:
    try:
        check()
    except Exception as error:
        log.warning("readiness check failed", extra={"check": name, "error": str(error)})
        return f"error: {type(error).__name__}"
    return "ok"
