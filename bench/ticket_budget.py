"""Where a ticket's CPU goes, in-process: how much of it is the two round trips a ticket must make.

Run from the repository root:

    .venv/bin/python -m bench.ticket_budget [--calls N] [--repeats R] [--json]

What runs: the app as `broker serve` builds it (`create_app`), in this one process and one thread, driven by
Flask's test client (no server, no sockets but the app's own), against the machine's PostgreSQL and Redis
with the settings of `bench.tickets` (HS256 JWTs for 400 users, the rate limit on Redis, a storage quota, the
`pending` row, the ticket metrics, JSON logs, here to a file). Interleaved, N calls each, R repetitions:

- `GET /healthz` and `POST /v1/uploads`, through the whole app;
- the ticket's two round trips alone, as the view makes them: the rate-limit script on Redis (`hit`, which
  carries the metrics too) and the `pending` row's INSERT with its quota check (`record_upload`).

Per call: this process's CPU (`time.process_time`), PostgreSQL's and Redis's CPU (their processes'
utime+stime from /proc) and wall time, the median over repetitions. Then a ticket's CPU is split into what a
`/healthz` pays too (the framework), the two round trips' client side, and the rest (token, body, validation,
policy, presign, the answer, the log line).

Why: under `bench.tickets` the server's CPU per request is this in-process CPU plus what serving costs around
it (sockets, threads, gunicorn), so these figures tell how much of a ticket is fixed by what it must do before
any code is written against a target. It reports; it has no target of its own.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import logging
import os
import statistics
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TextIO, cast

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:  # `python bench/ticket_budget.py` puts bench/ on the path, not the repository
    sys.path.insert(0, str(REPO))

from bench.tickets import (  # noqa: E402  (after the path fix above)
    BODY,
    QUOTA_BYTES,
    USERS,
    backing_pids,
    create_schema,
    delete_redis_keys,
    drop_schema,
    process_cpu_seconds,
    service_env,
    user_tokens,
)

SIZE = cast(int, BODY["size"])
WARMUP_CALLS = 300
MAX_CALLS, MAX_REPEATS = 20_000, 10


@dataclass
class Cost:
    """One kind of call's median cost, in microseconds per call."""

    name: str
    client_us: float  # this process's CPU
    backing_us: float  # PostgreSQL's and Redis's CPU
    wall_us: float


def measure(call: Callable[[int], None], calls: int) -> tuple[float, float, float]:
    backing = backing_pids()
    backing_before, cpu_before, wall_before = (
        process_cpu_seconds(backing),
        time.process_time(),
        time.perf_counter(),
    )
    for i in range(calls):
        call(i)
    wall, cpu = time.perf_counter() - wall_before, time.process_time() - cpu_before
    backing_cpu = process_cpu_seconds(backing) - backing_before
    return 1e6 * cpu / calls, 1e6 * backing_cpu / calls, 1e6 * wall / calls


def run(calls: int, repeats: int, user_prefix: str, log: TextIO) -> list[Cost]:
    from app.api.context import services
    from app.api.ratelimit import hit
    from app.factory import create_app
    from app.logging_setup import configure_logging
    from app.tickets import record_upload

    configure_logging()
    for handler in logging.getLogger().handlers:  # the JSON lines as production writes them, to a file
        if isinstance(handler, logging.StreamHandler):
            handler.setStream(log)
    app = create_app()
    client = app.test_client()
    tokens = user_tokens(user_prefix)
    users = [f"{user_prefix}-{i}" for i in range(USERS)]
    body = json.dumps(BODY)

    def healthz(i: int) -> None:
        assert client.get("/healthz").status_code == 200

    def ticket(i: int) -> None:
        headers = {"Authorization": f"Bearer {tokens[i % USERS]}", "Content-Type": "application/json"}
        answer = client.post("/v1/uploads", data=body, headers=headers)
        assert answer.status_code == 201, answer.data

    def rate_limit(i: int) -> None:
        assert hit(f"user:{users[i % USERS]}") is not None

    def row(i: int) -> None:
        record_upload(services(), pending_row(users[i % USERS]), SIZE, QUOTA_BYTES)

    # The view's own calls need the app context a request has. The requests must not run inside a pushed
    # one: each would share it (and what it holds) instead of getting its own, as under a server.
    contestants: dict[str, tuple[Callable[[int], None], bool]] = {
        "GET /healthz": (healthz, False),
        "POST /v1/uploads": (ticket, False),
        "rate limit (Redis)": (rate_limit, True),
        "row INSERT with quota (PostgreSQL)": (row, True),
    }
    samples: dict[str, list[tuple[float, float, float]]] = {name: [] for name in contestants}
    for repetition in range(repeats + 1):  # the first one warms every path up and is not kept
        for name, (call, in_app_context) in contestants.items():
            with app.app_context() if in_app_context else contextlib.nullcontext():
                sample = measure(call, calls if repetition else WARMUP_CALLS)
            if repetition:
                samples[name].append(sample)
    return [
        Cost(name, *(statistics.median(sample[field] for sample in runs) for field in range(3)))
        for name, runs in samples.items()
    ]


def pending_row(owner_id: str) -> dict[str, Any]:
    """A `pending` row as `issue_ticket` builds it for the bench's photo."""
    now, upload_id = datetime.now(UTC), str(uuid.uuid4())
    return {
        "id": upload_id,
        "owner_id": owner_id,
        "kind": "workout_photo",
        "status": "pending",
        "visibility": "private",
        "declared_type": "image/jpeg",
        "declared_size": SIZE,
        "filename": BODY["filename"],
        "context": BODY["context"],
        "document_id": None,
        "temp_key": f"temp/{upload_id}",
        "ticket_expires_at": now + timedelta(minutes=15),
        "multipart_upload_id": None,
        "part_size": None,
        "ai_processed": False,
        "created_at": now,
        "updated_at": now,
    }


def print_report(costs: list[Cost], calls: int, repeats: int) -> None:
    by_name = {cost.name: cost for cost in costs}
    print(f"in-process, one thread, {calls} calls x {repeats} repetitions (median), microseconds per call")
    print(f"{'call':36s} {'client CPU':>10s} {'PG+Redis CPU':>12s} {'wall':>8s}")
    for cost in costs:
        print(f"{cost.name:36s} {cost.client_us:10.0f} {cost.backing_us:12.0f} {cost.wall_us:8.0f}")
    healthz, ticket = by_name["GET /healthz"], by_name["POST /v1/uploads"]
    trips = by_name["rate limit (Redis)"].client_us + by_name["row INSERT with quota (PostgreSQL)"].client_us
    rest = ticket.client_us - healthz.client_us - trips
    print()
    print(f"a ticket's client CPU {ticket.client_us:.0f} us:")
    print(f"  what a /healthz pays too (the framework)      {healthz.client_us:6.0f} us")
    print(f"  the two round trips, client side              {trips:6.0f} us")
    print(f"  the rest (token, body, policy, presign, log)  {rest:6.0f} us")
    print(f"  PostgreSQL + Redis per ticket                 {ticket.backing_us:6.0f} us")


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--calls", type=int, default=3000, help=f"calls per measurement (1-{MAX_CALLS})")
    parser.add_argument("--repeats", type=int, default=3, help=f"interleaved repetitions (1-{MAX_REPEATS})")
    parser.add_argument("--json", action="store_true", help="print the results as JSON instead of a table")
    args = parser.parse_args(argv)
    calls = max(1, min(MAX_CALLS, args.calls))
    repeats = max(1, min(MAX_REPEATS, args.repeats))

    run_id = uuid.uuid4().hex[:8]
    schema = create_schema(run_id)
    os.environ.update(service_env(run_id, schema))
    try:
        with tempfile.TemporaryFile("w") as log:
            costs = run(calls, repeats, run_id, log)
    finally:
        drop_schema(schema)
        delete_redis_keys(f"bench-tickets-{run_id}", run_id)
    if args.json:
        print(json.dumps([asdict(cost) for cost in costs], indent=2))
    else:
        print_report(costs, calls, repeats)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
