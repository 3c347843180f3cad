"""A Redis database per `broker dev` stack, so two stacks on one Redis share nothing.

Metrics, sweep locks, the rate limits (the dev user's too) and RQ's queues all live in one Redis database, and
not all of them are namespaced yet: two stacks on one database count into each other's metrics, skip each
other's sweeps, share the dev user's rate limit and take each other's jobs. So each stack holds a database with
a lease (a key with a TTL, renewed while it runs, deleted when it stops): the configured URL's database if no
other stack holds it, else the next one that no stack holds and that is empty or was a dev stack's before.
A stack started again from the same directory and port takes its own database back at once.

A Redis URL the user set is used as it is (their setting wins): if another stack holds that database, the
banner says so and how to give each stack its own.
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from dataclasses import dataclass
from urllib.parse import urlsplit, urlunsplit

from redis import Redis
from redis.exceptions import RedisError, ResponseError

LEASE_KEY = "broker-dev:stack"  # who holds this database now (expires if that stack dies)
USED_KEY = "broker-dev:used"  # a dev stack held this database once: its leftovers are a dev stack's
LEASE_SECONDS = 60
RENEW_SECONDS = 10.0
DATABASES = (
    16  # Redis' default `databases`; a SELECT beyond the server's count is refused and ends the search
)


def with_database(url: str, database: int) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(path=f"/{database}"))


def database_of(url: str) -> int:
    path = urlsplit(url).path.strip("/")
    return int(path) if path.isdigit() else 0


def _client(url: str) -> Redis:
    return Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1)


@dataclass
class Claim:
    url: str  # the database this stack uses
    held: bool  # whether this stack holds its lease (False: the user's URL, held by another stack)
    other: str | None = (
        None  # who else holds the URL's database (the user's URL), or held the first one tried
    )

    def note(self) -> str:
        """The banner's word on it: empty when nothing is shared."""
        database = database_of(self.url)
        if not self.held and self.other:
            return (
                f"(shared with another broker dev, {self.other}: give each stack its own database, e.g. "
                f"BROKER_REDIS_URL={with_database(self.url, database + 1)})"
            )
        if self.other:
            return f"(database {database}: another broker dev, {self.other}, holds the one configured)"
        return ""


def claim_database(url: str, owner: str, user_set: bool) -> Claim:
    """The database this stack uses: see the module's doc. `owner` names the stack (directory and port)."""
    first = database_of(url)
    holder = _holder(url)
    if user_set or holder in (None, owner):
        held = _take(url, owner)
        return Claim(url, held, None if held else _holder(url))
    for database in range(first + 1, DATABASES):
        candidate = with_database(url, database)
        try:
            if _free(candidate, owner) and _take(candidate, owner):
                return Claim(candidate, True, holder)
        except ResponseError:  # past the server's `databases`
            break
    raise RuntimeError(
        f"every Redis database from {first} on at {with_database(url, first)} is held by another broker dev "
        "or holds other data; set BROKER_REDIS_URL to a database of your choice"
    )


def _holder(url: str) -> str | None:
    value = _client(url).get(LEASE_KEY)
    return value.decode() if isinstance(value, bytes) else None


def _free(url: str, owner: str) -> bool:
    redis = _client(url)
    holder = redis.get(LEASE_KEY)
    if holder is not None:
        return bool(holder.decode() == owner)
    return bool(redis.dbsize() == 0 or redis.exists(USED_KEY))


def _take(url: str, owner: str) -> bool:
    redis = _client(url)
    if redis.set(LEASE_KEY, owner, nx=True, ex=LEASE_SECONDS) or redis.get(LEASE_KEY) == owner.encode():
        redis.expire(LEASE_KEY, LEASE_SECONDS)
        redis.set(USED_KEY, "1")
        return True
    return False


class LeaseKeeper:
    """Renews the lease every RENEW_SECONDS on a thread of its own (a stalled Redis never blocks the
    supervisor) and deletes it at `stop()`. A lease that expired during a long stall is taken again when
    Redis answers; if another stack took the database meanwhile, that is said once."""

    def __init__(self, claim: Claim, owner: str, say: Callable[[str], None]) -> None:
        self.claim, self.owner, self.say = claim, owner, say
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._renew, name="redis-lease", daemon=True)

    def start(self) -> None:
        if self.claim.held:
            self._thread.start()

    def _renew(self) -> None:
        lost = False
        while not self._stop.wait(RENEW_SECONDS):
            try:
                held = _take(self.claim.url, self.owner)
                holder = None if held else _holder(self.claim.url)
            except RedisError:
                continue  # Redis is down: the worker and scheduler say so; the lease is renewed when it is back
            if not held and not lost:
                self.say(f"another broker dev ({holder}) took {self.claim.url} while Redis stalled")
            lost = not held

    def stop(self) -> None:
        self._stop.set()
        if not self.claim.held:
            return
        if self._thread.is_alive():
            self._thread.join(2)
        try:
            redis = _client(self.claim.url)
            if redis.get(LEASE_KEY) == self.owner.encode():
                redis.delete(LEASE_KEY)
        except RedisError:
            pass  # it expires by itself
