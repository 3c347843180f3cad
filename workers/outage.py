"""How a long-running process lives through a dependency's outage: it waits and tries again, with backoff,
and says so twice — once when the outage begins, once when it is over — instead of once per try."""

from __future__ import annotations

import logging
import time

from redis.exceptions import ConnectionError as RedisConnectionError
from redis.exceptions import TimeoutError as RedisTimeoutError

# What a stalled, restarting or unreachable Redis raises (redis-py's own, not the builtins).
REDIS_DOWN = (RedisConnectionError, RedisTimeoutError)


class Outage:
    """The state of one dependency as one process sees it."""

    def __init__(
        self, process: str, dependency: str, log: logging.Logger, first: float = 1.0, cap: float = 30.0
    ) -> None:
        self.process, self.dependency, self.log = process, dependency, log
        self.first, self.cap = first, cap
        self.began: float | None = None  # monotonic, while down
        self._wait = first

    def failed(self, error: BaseException) -> float:
        """Note a failed try; the seconds to wait before the next (doubling up to the cap)."""
        if self.began is None:
            self.began = time.monotonic()
            self.log.warning(
                f"{self.dependency} unreachable; {self.process} keeps trying",
                extra={"stage": self.process, "dependency": self.dependency, "error": repr(error)},
            )
            self._wait = self.first
        wait, self._wait = self._wait, min(self._wait * 2, self.cap)
        return wait

    def recovered(self) -> None:
        """Note a try that worked; says so if it ends an outage."""
        if self.began is not None:
            self.log.warning(
                f"{self.dependency} is back; {self.process} carries on",
                extra={
                    "stage": self.process,
                    "dependency": self.dependency,
                    "outage_seconds": round(time.monotonic() - self.began, 1),
                },
            )
            self.began = None
