"""Deleting an upload's `temp/` object once it is no longer needed: at once, or after the job, off its path.

Once an upload is `ready` (or `rejected`), its temp object is garbage: nothing will read it again, and a failed
delete only leaves it for the temp clean-up sweep (`workers.cleanup`), which removes the temp objects of
finished uploads. So a long-running worker need not make its job wait for that DELETE: `broker worker` runs
under `deferred_temp_deletes()`, and a finished upload's DELETE goes to one thread of the worker while RQ
closes the job and the next one is claimed and fetched. Measured with 2 workers draining 48 photos
(`bench.pipeline`'s drain, 6 interleaved pairs): +3.5% images per second, the median of the pairs.

What stays as it was:
- at most `PENDING_LIMIT` deletes wait; beyond that a job deletes its object itself (a slow store slows the
  jobs down instead of piling work up);
- when the worker stops, it waits up to `DRAIN_SECONDS` for the deletes still waiting; any left (a store that
  does not answer) are logged and left to the sweep, like a failed delete;
- outside a worker (a test's in-process worker, a one-off command) the DELETE runs in the job, as before.
"""

from __future__ import annotations

import contextlib
import logging
import queue
import threading
import time
from collections.abc import Iterator

from app.storage import Storage

log = logging.getLogger(__name__)

PENDING_LIMIT = 32  # deletes waiting for the thread; a job past it deletes its own object
DRAIN_SECONDS = 10.0  # how long a stopping worker waits for the deletes still waiting

_Delete = tuple[Storage, str, dict[str, str]]  # the store, the key, the log context of its upload


def delete_now(storage: Storage, key: str, context: dict[str, str]) -> None:
    """Delete `key`; a failure is logged, never raised (the sweep removes what is left)."""
    try:
        storage.delete(key)
    except Exception:
        log.warning("temp object not deleted", extra={**context, "stage": "cleanup"}, exc_info=True)


class _DeferredDeletes:
    """One daemon thread deleting keys in the order given (daemon: a store that hangs cannot keep a stopped
    worker alive; `close` bounds the wait)."""

    def __init__(self) -> None:
        self._waiting: queue.Queue[_Delete | None] = queue.Queue(maxsize=PENDING_LIMIT)
        self._thread = threading.Thread(target=self._run, name="temp-deletes", daemon=True)
        self._thread.start()

    def submit(self, storage: Storage, key: str, context: dict[str, str]) -> bool:
        """Queue the delete; False when `PENDING_LIMIT` are already waiting (the caller deletes it itself)."""
        try:
            self._waiting.put_nowait((storage, key, context))
        except queue.Full:
            return False
        return True

    def close(self, timeout: float) -> None:
        """Let the waiting deletes run, for up to `timeout` seconds; then stop the thread."""
        deadline = time.monotonic() + timeout
        stop_sent = False
        with contextlib.suppress(queue.Full):  # full: the thread is stuck on the store; it is abandoned
            self._waiting.put(None, timeout=timeout)  # after every delete already queued
            stop_sent = True
        self._thread.join(max(0.0, deadline - time.monotonic()))
        if self._thread.is_alive():
            left = self._waiting.unfinished_tasks - stop_sent  # the one in progress and those waiting
            log.warning(
                "temp deletes left to the clean-up sweep",
                extra={"stage": "cleanup", "outcome": "abandoned", "count": left, "waited_seconds": timeout},
            )

    def _run(self) -> None:
        while (item := self._waiting.get()) is not None:
            delete_now(*item)
            self._waiting.task_done()


_deferred: _DeferredDeletes | None = None


@contextlib.contextmanager
def deferred_temp_deletes(drain_seconds: float = DRAIN_SECONDS) -> Iterator[None]:
    """While inside, `delete_after_job` hands deletes to a thread of this process (`broker worker`)."""
    global _deferred
    deferred = _DeferredDeletes()
    _deferred = deferred
    try:
        yield
    finally:
        _deferred = None
        deferred.close(drain_seconds)


def delete_after_job(storage: Storage, key: str, context: dict[str, str]) -> None:
    """Delete a finished upload's temp object: after the job when a worker defers deletes, else now."""
    deferred = _deferred
    if deferred is None or not deferred.submit(storage, key, context):
        delete_now(storage, key, context)
