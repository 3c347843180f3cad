"""A sandbox process that serves several attempts in turn, each under the same hard limits as a fresh child.

Forking a fresh child per attempt is the strictest isolation, but on a virtual machine its price is high: the
child pays a page fault for every page of heap it writes (copy-on-write of the worker's pages, then fresh pages
for the decoder's buffers), ~50 ms of CPU for a 12 MP photo against ~130 ms for the image itself. A host keeps
its heap between attempts, as the in-process stage does, and the price is paid once per host.

What each attempt still gets, enforced by the kernel:

- **CPU**: a per-attempt `ITIMER_PROF` (CPU time of the whole process, every thread) whose signal is left at
  its default action, so the host dies at the budget however the decoder spins;
- **memory**: `RLIMIT_DATA` of the host = what it inherited + the kind's budget, as for a fresh child;
- the parent's **wall-clock deadline**, and **death with the parent** (`PR_SET_PDEATHSIG`: a host is a child of
  the fork server, which ends with the worker).

Hosts come from the same fork server as fresh children (`workers.sandbox`), never from a fork of the worker.

A host serves at most `ProcessLimits.attempts_per_process` attempts, then exits; it also exits after any
attempt that did not end with a result (a rejection, a crash, a breach: the file may have been hostile, so
nothing after it runs in the same address space), when its private memory has grown by half its budget (heap
fragmentation is not carried forever), and after `IDLE_SECONDS` without work (an idle worker gives its memory
back). The price of reuse, stated plainly: a decoder exploit that leaves no trace in its own answer could
observe the next attempts of the same host; `BROKER_SANDBOX_ATTEMPTS_PER_PROCESS=1` restores a fresh process
per attempt.

The parent sends each request as a pickle (it is the trusted side) and reads back only length-prefixed JSON:
`{"retiring": ..., "answer": <what a fresh child would send>}`.
"""

from __future__ import annotations

import gc
import json
import logging
import os
import pickle
import select
import signal
import struct
import threading
import time
from collections.abc import Callable
from typing import Any

from app.domain.rejections import Rejected, RejectionCode
from workers.forkserver import SERVER
from workers.sandbox import (
    Answer,
    ProcessingCrashed,
    ProcessLimits,
    answer_for,
    confine,
    memory_answer,
    private_memory,
    run_limited,
    verdict,
    write_all,
)

log = logging.getLogger(__name__)

IDLE_SECONDS = 60.0
_HEADER = struct.Struct("!I")  # the length of each message


class HostRetired(Exception):
    """The host had exited on its own (idle) before it read the request: send it to a new host."""


class SandboxHost:
    """One long-lived limited child of the worker's main thread."""

    def __init__(self, limits: ProcessLimits) -> None:
        self.limits = limits
        self.attempts = 0  # sent to it
        self.ended: str | None = None  # why it is gone, once it is (for the log)
        request_end, self._requests = os.pipe()
        self._answers, answer_end = os.pipe()
        try:
            self._process = SERVER.spawn(_serve, (limits, IDLE_SECONDS), (request_end, answer_end))
        except BaseException:
            os.close(self._requests)
            os.close(self._answers)
            raise
        finally:
            os.close(request_end)
            os.close(answer_end)
        self.pid = self._process.pid
        self.alive = True

    def run(self, func: Callable[..., Any], args: tuple[Any, ...]) -> Any:
        """`func(*args)` in the host; the same answers and exceptions as `sandbox.run_limited`, and
        `HostRetired` when the host had already left."""
        request = pickle.dumps((func, args))
        try:
            write_all(self._requests, _HEADER.pack(len(request)) + request)
        except BrokenPipeError:
            self._reap("idle")
            raise HostRetired() from None
        self.attempts += 1
        deadline = time.monotonic() + self.limits.deadline_seconds
        try:
            payload, timed_out = _read_message(self._answers, deadline)
        except BaseException:
            self.stop("job stopped")  # the job is being stopped while the host works: never leave it running
            raise
        if timed_out:
            self.stop("deadline")
            raise Rejected(
                RejectionCode.TOO_COMPLEX, f"processing took longer than {self.limits.deadline_seconds:.0f} s"
            )
        if payload is None:  # the host ended without answering
            exitcode = self._reap("ended")
            if exitcode == 0:
                self.ended = "idle"
                raise HostRetired()  # it only exits 0 between attempts: this one was never read
            self.ended = _ending(exitcode)
            return verdict(None, exitcode, self.limits)
        message = json.loads(payload)
        if message["retiring"]:
            self._reap(message["retiring"])
        if message["answer"] is None:
            raise ProcessingCrashed("processing ended with an error and no answer")
        return verdict(message["answer"], 0, self.limits)

    def stop(self, reason: str = "stopped") -> None:
        if self.alive:
            self._process.kill()
            self._reap(reason)

    def _reap(self, reason: str) -> int:
        """Wait for the host to end (it is ending or killed); its exit code (minus the signal that ended it)."""
        exitcode = self._process.kill() if self._process.wait(5) is None else self._process.wait()
        self.alive = False
        self.ended = reason
        os.close(self._requests)
        os.close(self._answers)
        return exitcode if exitcode is not None else 70


def _ending(exitcode: int) -> str:
    return f"killed by {signal.Signals(-exitcode).name}" if exitcode < 0 else f"exit status {exitcode}"


_hosts: dict[ProcessLimits, SandboxHost] = {}


def run_attempt(func: Callable[..., Any], *args: Any, limits: ProcessLimits) -> Any:
    """One processing attempt under `limits`: in this process's host for those limits (started when needed)
    when `limits.attempts_per_process` is above 1, else in a fresh child. `func` must be a module-level
    function and `args` must pickle. Answers and raises as `sandbox.run_limited`.

    Only the main thread uses hosts (a worker runs its jobs there): a host serves one attempt at a time, and
    the hosts are kept per process without a lock. Other threads get a fresh child per attempt.
    """
    if limits.attempts_per_process <= 1 or threading.current_thread() is not threading.main_thread():
        return run_limited(func, *args, limits=limits)
    for _ in range(2):
        host = _hosts.get(limits)
        if host is None or not host.alive:
            host = _hosts[limits] = _replace(host, limits)
        try:
            return host.run(func, args)
        except HostRetired:
            continue
    raise ProcessingCrashed("two new sandbox hosts in a row ended before reading the attempt")


def _replace(previous: SandboxHost | None, limits: ProcessLimits) -> SandboxHost:
    host = SandboxHost(limits)
    context: dict[str, object] = {"stage": "sandbox", "pid": host.pid, "cpu_seconds": limits.cpu_seconds}
    if previous is not None:
        # Why the last one went: its quota, idle, or what an attempt did to it (a refusal, a breach, a crash).
        context |= {"previous_pid": previous.pid, "previous_attempts": previous.attempts}
        context["previous_ended"] = previous.ended
    log.info("sandbox process started", extra=context)
    return host


def stop_hosts() -> None:
    """End every host of this process (they would also end with it, or when idle)."""
    for host in _hosts.values():
        host.stop()
    _hosts.clear()


# A process forked from this one (a fresh sandbox child, a host) must not use this process's hosts.
os.register_at_fork(after_in_child=_hosts.clear)


# --- the host side ------------------------------------------------------------------------------------------


def _serve(fds: list[int], limits: ProcessLimits, idle_seconds: float) -> None:
    requests, answers = fds
    out_of_memory = memory_answer(limits)  # encoded now: once memory is exhausted, nothing can be built
    code = 0
    try:
        gc.freeze()  # what the fork server built stays as it is: no finaliser of its objects runs here
        confine(limits)
        signal.signal(signal.SIGPROF, signal.SIG_DFL)
        signal.signal(signal.SIGINT, signal.SIG_IGN)  # a terminal's Ctrl-C is for the worker to handle
        grown_limit: int | None = None
        for attempt in range(1, limits.attempts_per_process + 1):
            request = _read_request(requests, idle_seconds)
            if request is None:
                break
            func, args = pickle.loads(request)
            if (
                grown_limit is None
            ):  # measured once the first attempt's code is imported: growth beyond is heap
                grown_limit = private_memory() + limits.memory_bytes // 2
            signal.setitimer(signal.ITIMER_PROF, limits.cpu_seconds)
            answer = answer_for(func, args, out_of_memory)
            signal.setitimer(signal.ITIMER_PROF, 0)
            if answer.code:  # a crash: the parent is told what was raised, and this host ends
                data = b'{"retiring": "crashed", "answer": %s}' % (answer.data or b"null")
                write_all(answers, _HEADER.pack(len(data)) + data)
                code = answer.code
                break
            retiring = _retiring(answer, attempt == limits.attempts_per_process, grown_limit)
            data = b'{"retiring": %s, "answer": %s}' % (json.dumps(retiring).encode(), answer.data)
            write_all(answers, _HEADER.pack(len(data)) + data)
            if retiring:
                break
    except BaseException:
        code = 70
    finally:
        os._exit(code)


def _retiring(answer: Answer, last: bool, grown_limit: int) -> str | None:
    """Why the host exits after this answer, or None: it serves the next attempt."""
    if not answer.result:
        return "refused"  # the file may have been hostile: nothing runs after it here
    if last:
        return "quota"
    if private_memory() > grown_limit:
        return "grown"
    return None


def _read_request(fd: int, idle_seconds: float) -> bytes | None:
    """The next request, or None when the worker closed the pipe or sent nothing for `idle_seconds`."""
    ready, _, _ = select.select([fd], [], [], idle_seconds)
    if not ready:
        return None
    payload, _ = _read_message(fd, None)
    return payload


# --- framing --------------------------------------------------------------------------------------------------


def _read_message(fd: int, deadline: float | None) -> tuple[bytes | None, bool]:
    """One length-prefixed message: (payload, False); (None, False) at end of file; (None, True) when
    `deadline` (monotonic) passes first."""
    header, timed_out = _read_exactly(fd, _HEADER.size, deadline)
    if header is None:
        return None, timed_out
    (length,) = _HEADER.unpack(header)
    return _read_exactly(fd, length, deadline)


def _read_exactly(fd: int, size: int, deadline: float | None) -> tuple[bytes | None, bool]:
    chunks: list[bytes] = []
    missing = size
    while missing:
        if deadline is not None:
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                return None, True
            ready, _, _ = select.select([fd], [], [], remaining)
            if not ready:
                continue
        chunk = os.read(fd, min(missing, 1 << 20))
        if not chunk:
            return None, False
        chunks.append(chunk)
        missing -= len(chunk)
    return b"".join(chunks), False
