"""Per-user rate limits on ticket requests: fixed windows counted in Redis, so all API processes share them.

Keyed by the authenticated user, not the IP: mobile users share carrier NAT addresses (a request without a
valid token counts against one shared `anonymous` key, then gets its 401 from the view). A check is one
round trip: one Lua script (`EVALSHA`) runs `SET key 0 EX <window> NX` (the window starts at the user's
first request), `INCR key` and `PTTL key` per configured limit, atomically, so the key can never lose its
expiry between the commands; the same call delivers the process's pending API counters (`app.metrics`). (A
MULTI/EXEC pipeline of the same commands, five commands and five replies for redis-py to pack and parse,
cost three times the client CPU of one script call.) Over the limit is 429 `rate_limited` with
`Retry-After`; every answer of the route carries `X-RateLimit-Limit`, `-Remaining`, `-Reset` (epoch
seconds) and `Retry-After` (seconds until the window resets) for the tightest limit.

The limit is `BROKER_TICKET_RATE_LIMIT` in flask-limiter's syntax ("60/minute", "10/second;300/hour"), parsed
by `limits`. If Redis is down the check lets requests through — the ticket itself still works, and the
webhook's 503 is what protects uploads then — and this process skips the check for
`PAUSE_AFTER_FAILURE_SECONDS`, so an outage costs one connect timeout per pause, not one per request.

Why not flask-limiter: its hit, then its header injection, cost three Redis round trips and ~1 ms of CPU
per ticket, a fifth of a ticket's cost (`bench/tickets.py`).
"""

from __future__ import annotations

import functools
import hashlib
import logging
import math
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import ParamSpec, TypeVar

from flask import Flask, Response, g
from limits import RateLimitItem, parse_many
from redis import Redis
from redis.exceptions import NoScriptError

from app.api.context import current_principal, services
from app.api.errors import ApiError

log = logging.getLogger(__name__)
P = ParamSpec("P")
R = TypeVar("R")

PAUSE_AFTER_FAILURE_SECONDS = 10.0
_paused_until: dict[int, float] = {}  # id(Redis client) -> monotonic time checks resume

# KEYS: the limits' counters, then the metric hashes of the process's pending counts (`app.metrics`), which
# ride along so a ticket pays one round trip for both. ARGV: how many KEYS are counters, each counter's
# window in seconds, then a field and an amount per metric hash. Returns count and ms to reset per counter.
_HIT_SCRIPT = """
local limits = tonumber(ARGV[1])
local replies = {}
for i = 1, limits do
  redis.call('SET', KEYS[i], 0, 'EX', ARGV[i + 1], 'NX')
  replies[#replies + 1] = redis.call('INCR', KEYS[i])
  replies[#replies + 1] = redis.call('PTTL', KEYS[i])
end
for i = limits + 1, #KEYS do
  local at = 2 * i - limits
  redis.call('HINCRBY', KEYS[i], ARGV[at], ARGV[at + 1])
end
return replies
"""
_HIT_SHA = hashlib.sha1(_HIT_SCRIPT.encode()).hexdigest()


@dataclass(frozen=True)
class WindowState:
    limit: RateLimitItem
    count: int  # requests in the window, this one included
    reset_at: float  # epoch seconds

    @property
    def remaining(self) -> int:
        return max(0, self.limit.amount - self.count)

    @property
    def exceeded(self) -> bool:
        return self.count > self.limit.amount

    def headers(self, now: float) -> dict[str, str]:
        return {
            "X-RateLimit-Limit": str(self.limit.amount),
            "X-RateLimit-Remaining": str(self.remaining),
            "X-RateLimit-Reset": str(math.ceil(self.reset_at)),
            "Retry-After": str(max(1, math.ceil(self.reset_at - now))),
        }


@functools.lru_cache(maxsize=8)
def parsed_limits(spec: str) -> tuple[RateLimitItem, ...]:
    return tuple(parse_many(spec))


def _user_key() -> str:
    # Runs before the view: a caller without a valid token must get the view's clean 401, not a traceback here.
    try:
        return f"user:{current_principal().user_id}"
    except ApiError:
        return "anonymous"


def hit(who: str) -> WindowState | None:
    """Count one ticket request of `who` against every configured limit; the tightest window's state, or
    None when Redis could not be asked (fail open)."""
    broker = services()
    redis, limits = broker.redis, parsed_limits(broker.settings.ticket_rate_limit)
    if not limits or time.monotonic() < _paused_until.get(id(redis), 0.0):
        return None
    prefix = f"{broker.settings.redis_namespace}:ratelimit:tickets:{who}"
    keys = [f"{prefix}:{limit.amount}/{limit.get_expiry()}" for limit in limits]
    args: list[str | int] = [len(limits), *(limit.get_expiry() for limit in limits)]
    pending = broker.pending_metrics.take()
    for metric_key, field, amount in pending:
        keys.append(metric_key)
        args += [field, amount]
    try:
        replies = _run_hit_script(redis, keys, args)
    except Exception as error:
        broker.pending_metrics.give_back(pending)
        _paused_until[id(redis)] = time.monotonic() + PAUSE_AFTER_FAILURE_SECONDS
        log.warning(
            "rate limit store unavailable; ticket requests not limited",
            extra={"stage": "ratelimit", "pause_seconds": PAUSE_AFTER_FAILURE_SECONDS, "error": str(error)},
        )
        return None
    now = time.time()
    states = [
        WindowState(limit, int(count), now + max(int(pttl), 0) / 1000)
        for limit, (count, pttl) in zip(limits, _pairs(replies), strict=True)
    ]
    exceeded = [state for state in states if state.exceeded]
    return max(exceeded, key=lambda s: s.reset_at) if exceeded else min(states, key=lambda s: s.remaining)


def _run_hit_script(redis: Redis, keys: list[str], args: list[str | int]) -> list[int]:
    try:
        return redis.evalsha(_HIT_SHA, len(keys), *keys, *args)  # type: ignore[no-any-return]
    except NoScriptError:  # a restarted or flushed Redis: EVAL loads the script again
        return redis.eval(_HIT_SCRIPT, len(keys), *keys, *args)  # type: ignore[no-any-return]


def _pairs(replies: list[int]) -> list[tuple[int, int]]:
    return [(replies[i], replies[i + 1]) for i in range(0, len(replies), 2)]


def ticket_rate_limit(view: Callable[P, R]) -> Callable[P, R]:
    """Refuse the request with 429 once the caller is over `BROKER_TICKET_RATE_LIMIT`."""

    @functools.wraps(view)
    def limited(*args: P.args, **kwargs: P.kwargs) -> R:
        state = hit(_user_key())
        if state is not None:
            headers = state.headers(time.time())
            g.rate_limit_headers = headers
            if state.exceeded:
                raise ApiError(429, "rate_limited", f"too many upload tickets: limit {state.limit}", headers)
        return view(*args, **kwargs)

    return limited


def init_rate_limits(app: Flask) -> None:
    """Every answer of a limited route (success, refusal or error) carries the caller's window (the
    counters live in the services' Redis, beside the metrics)."""

    @app.after_request
    def _rate_limit_headers(response: Response) -> Response:
        headers = g.get("rate_limit_headers")
        if headers:
            for name, value in headers.items():
                response.headers.setdefault(name, value)
        return response
