"""Run one processing attempt in a child process under hard, OS-enforced limits.

Decoders (Pillow's, and later FFmpeg's and a PDF parser's) are the classic attack surface: a hostile file can
make a decoder spin for hours or allocate gigabytes. No decoder can be trusted to be fast, so the attempt runs
in a forked child with:

- `RLIMIT_CPU`: the kernel sends SIGXCPU at the soft limit and SIGKILL a second later;
- `RLIMIT_DATA`: a budget of private writable memory (heap, anonymous mappings, thread stacks) on top of what
  the child inherited at fork. Allocation beyond it fails, which Python and Pillow turn into `MemoryError`.
  (`RLIMIT_AS` would also count glibc's 64 MiB per-thread arena reservations and every shared library.)
- a wall-clock deadline in the parent, for a child that blocks without burning CPU;
- `PR_SET_PDEATHSIG`: the child is killed when its parent dies, so stopping a worker (or `broker dev`) never
  leaves a decoder running on its own.

A breach is a verdict on the content, hence a `Rejected`: `too_complex` for CPU or wall time,
`too_large_to_process` for memory, `corrupt` when the decoder crashes on the bytes. The child sends back a
small JSON document through a pipe (the function's JSON-able result, or the rejection), never a pickle: the
parent must not deserialise objects built while parsing untrusted input. Big outputs go to files the function
writes in the work directory.
"""

from __future__ import annotations

import contextlib
import ctypes
import faulthandler
import json
import os
import resource
import select
import signal
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from app.domain.rejections import Rejected, RejectionCode

_PR_SET_PDEATHSIG = 1
_M_ARENA_MAX = -8  # mallopt(): one malloc arena per thread would waste the budget on reservations
RESULT_LIMIT = 1024 * 1024  # bytes of JSON a child may send back
_LIBC = ctypes.CDLL(None, use_errno=True)  # loaded once here: in each child it would cost ~6 ms


@dataclass(frozen=True)
class ProcessLimits:
    """The limits of one attempt of one kind of processing."""

    cpu_seconds: int
    memory_bytes: int  # private writable memory the attempt may add to what it inherited
    wall_seconds: float | None = None  # default: twice the CPU time plus 5 s (I/O, a busy machine)
    # Attempts one sandbox process serves before it is replaced (`workers.sandbox_host`); 1: a fresh child
    # for every attempt.
    attempts_per_process: int = 1

    @property
    def deadline_seconds(self) -> float:
        return self.wall_seconds if self.wall_seconds is not None else 2 * self.cpu_seconds + 5


class ProcessingCrashed(Exception):
    """The child ended without an answer for a reason that is not a verdict on the content."""


def run_limited(func: Callable[..., Any], *args: Any, limits: ProcessLimits) -> Any:
    """`func(*args)` in a child process under `limits`; returns its (JSON-able) result.

    Raises `Rejected` for a rejection raised by `func` and for a breached limit; `ProcessingCrashed` when the
    child ends otherwise (the job may then retry). Always a fresh child: `workers.sandbox_host.run_attempt`
    is what processors call, which honours `limits.attempts_per_process`.
    """
    read_fd, write_fd = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never returns
        os.close(read_fd)
        _child(func, args, limits, write_fd)
    os.close(write_fd)
    try:
        payload, timed_out = _read_until(read_fd, time.monotonic() + limits.deadline_seconds)
    except BaseException:
        # The job itself is being stopped (its timeout, a cold shutdown) while the child runs: the worker
        # process lives on, so the child's death signal will not fire; end it here.
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
        os.waitpid(pid, 0)
        raise
    finally:
        os.close(read_fd)
    if timed_out:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)
    _, status, usage = os.wait4(pid, 0)
    if timed_out:
        raise Rejected(
            RejectionCode.TOO_COMPLEX, f"processing took longer than {limits.deadline_seconds:.0f} s"
        )
    return verdict(payload, status, usage.ru_utime + usage.ru_stime, limits)


def _read_until(fd: int, deadline: float) -> tuple[bytes, bool]:
    """Everything the child writes until it closes the pipe, or (partial, True) at the deadline."""
    chunks: list[bytes] = []
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return b"".join(chunks), True
        ready, _, _ = select.select([fd], [], [], remaining)
        if not ready:
            continue
        chunk = os.read(fd, 65536)
        if not chunk:
            return b"".join(chunks), False
        chunks.append(chunk)


def verdict(payload: bytes, status: int, cpu_seconds: float | None, limits: ProcessLimits) -> Any:
    """The attempt's result from the child's answer, else from how it ended (`status`, and the CPU it used
    when that is the attempt's alone)."""
    if payload:
        answer = json.loads(payload)
        if "result" in answer:
            return answer["result"]
        raise Rejected(RejectionCode(answer["code"]), answer["message"])
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        # SIGXCPU / SIGKILL: RLIMIT_CPU of a fresh child; SIGPROF: the per-attempt CPU timer of a host.
        at_cpu_limit = cpu_seconds is not None and cpu_seconds >= limits.cpu_seconds - 0.5
        if sig in (signal.SIGXCPU, signal.SIGPROF) or (sig == signal.SIGKILL and at_cpu_limit):
            raise Rejected(
                RejectionCode.TOO_COMPLEX, f"processing needs more than {limits.cpu_seconds} s of CPU"
            )
        if sig == signal.SIGKILL:  # not the CPU limit: the kernel's OOM killer
            raise Rejected(RejectionCode.TOO_LARGE_TO_PROCESS, "processing ran out of memory")
        if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT):
            raise Rejected(
                RejectionCode.CORRUPT, f"the decoder crashed on this file ({signal.Signals(sig).name})"
            )
        raise ProcessingCrashed(f"processing was stopped by {signal.Signals(sig).name}")
    raise ProcessingCrashed(f"processing exited with status {os.WEXITSTATUS(status)} and no answer")


def _child(func: Callable[..., Any], args: tuple[Any, ...], limits: ProcessLimits, fd: int) -> None:
    answer: dict[str, Any] = {}
    code = 70
    try:
        confine(limits)
        resource.setrlimit(resource.RLIMIT_CPU, (limits.cpu_seconds, limits.cpu_seconds + 1))
        answer, code = answer_for(func, args, limits)
    finally:
        _answer_and_exit(answer, code, fd)


def answer_for(
    func: Callable[..., Any], args: tuple[Any, ...], limits: ProcessLimits
) -> tuple[dict[str, Any], int]:
    """Run the attempt here; (the JSON answer for the parent, 0), or ({}, 70) for an error that is not a
    verdict on the content (the parent classifies it by the exit status)."""
    try:
        return {"result": func(*args)}, 0
    except Rejected as rejected:
        return {"code": rejected.code.value, "message": rejected.message}, 0
    except MemoryError:
        budget = limits.memory_bytes // (1024 * 1024)
        message = f"processing needs more than {budget} MiB of memory"
        return {"code": RejectionCode.TOO_LARGE_TO_PROCESS.value, "message": message}, 0
    except BaseException:  # nothing is logged from a sandbox
        return {}, 70


def _answer_and_exit(answer: dict[str, Any], code: int, fd: int) -> None:
    try:
        write_all(fd, (json.dumps(answer).encode() if answer else b"")[:RESULT_LIMIT])
    finally:
        os._exit(code)  # no atexit handlers, no flushing of the parent's buffers


def write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        view = view[os.write(fd, view) :]


def confine(limits: ProcessLimits) -> None:
    """Everything but the CPU limit, which a fresh child and a host set differently."""
    _LIBC.prctl(_PR_SET_PDEATHSIG, signal.SIGKILL, 0, 0, 0)
    if os.getppid() == 1:  # the parent died before prctl took effect
        os._exit(0)
    _LIBC.mallopt(_M_ARENA_MAX, 2)
    faulthandler.disable()  # a decoder crash is reported by the parent as a verdict, not as a dump here
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_DFL)
    budget = private_memory() + limits.memory_bytes
    resource.setrlimit(resource.RLIMIT_DATA, (budget, budget))


def private_memory() -> int:
    """VmData of this process: what RLIMIT_DATA counts, inherited from the parent at fork."""
    with open("/proc/self/status") as status:
        for line in status:
            if line.startswith("VmData:"):
                return int(line.split()[1]) * 1024
    return 0
