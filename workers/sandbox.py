"""Run one processing attempt in a child process under hard, OS-enforced limits.

Decoders (Pillow's, FFmpeg's, a PDF parser's) are the classic attack surface: a hostile file can make a
decoder spin for hours or allocate gigabytes. No decoder can be trusted to be fast, so the attempt runs in a
child process with:

- a CPU budget: `ITIMER_PROF` (CPU time of every thread) whose SIGPROF ends the child at the budget, and
  `RLIMIT_CPU` a second later as the kernel's backstop (SIGXCPU, then SIGKILL);
- `RLIMIT_DATA`: a budget of private writable memory (heap, anonymous mappings, thread stacks) on top of what
  the child inherited at fork. Allocation beyond it fails, which Python and Pillow turn into `MemoryError`.
  (`RLIMIT_AS` would also count glibc's 64 MiB per-thread arena reservations and every shared library.)
- a wall-clock deadline in the parent, for a child that blocks without burning CPU;
- `PR_SET_PDEATHSIG`: the child is killed when its parent dies, so stopping a worker (or `broker dev`) never
  leaves a decoder running on its own.

**Where children come from.** Never from the worker itself: FFmpeg, libvips and glibc keep threads and locks
that a fork does not copy. Children are forked by the fork server (`workers.forkserver`), a fresh interpreter
that imports the processing modules and never decodes anything.

A breach is a verdict on the content, hence a `Rejected`: `too_complex` for CPU or wall time,
`too_large_to_process` for memory the child measured itself (a `MemoryError` at its own `RLIMIT_DATA`),
`corrupt` when the decoder crashes on the bytes. A SIGKILL from outside (the host's OOM killer, a container
limit, an operator) says nothing about the file: it is a crash, and the job retries. The child sends back a
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
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, NamedTuple

from app.domain.rejections import Rejected, RejectionCode
from workers.forkserver import SERVER

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


class _Spent(threading.local):
    seconds = 0.0


_spent = _Spent()  # CPU seconds the sandbox processes spent for this thread's attempts since the last reset


def cpu_spent(reset: bool = False) -> float:
    """CPU seconds the attempts of this thread cost in their sandbox processes (as the children measured
    them, or their whole budget for one stopped at its CPU limit); `reset` starts the count again."""
    seconds = _spent.seconds
    if reset:
        _spent.seconds = 0.0
    return seconds


class ProcessingCrashed(Exception):
    """The child ended without an answer for a reason that is not a verdict on the content. `raised`: it
    raised an exception no table judges (the same file will likely raise it again), rather than dying of a
    signal or an exit from outside."""

    def __init__(self, message: str, raised: bool = False) -> None:
        super().__init__(message)
        self.raised = raised


def run_limited(func: Callable[..., Any], *args: Any, limits: ProcessLimits) -> Any:
    """`func(*args)` in a child process under `limits`; returns its (JSON-able) result.

    Raises `Rejected` for a rejection raised by `func` and for a breached limit; `ProcessingCrashed` when the
    child ends otherwise (the job may then retry). Always a fresh child: `workers.sandbox_host.run_attempt`
    is what processors call, which honours `limits.attempts_per_process`. `func` must be a module-level
    function and `args` must pickle: both go to the child through the fork server.
    """
    answers, answer_end = os.pipe()
    try:
        child = SERVER.spawn(_child, (func, args, limits), (answer_end,))
    finally:
        os.close(answer_end)
    try:
        payload, timed_out = _read_until(answers, time.monotonic() + limits.deadline_seconds)
    except BaseException:
        # The job itself is being stopped (its timeout, a cold shutdown) while the child runs: the worker
        # process lives on, so the child's death signal will not fire; end it here.
        child.kill()
        raise
    finally:
        os.close(answers)
    if timed_out:
        child.kill()
        raise Rejected(
            RejectionCode.TOO_COMPLEX, f"processing took longer than {limits.deadline_seconds:.0f} s"
        )
    exitcode = child.wait()
    answer = json.loads(payload) if payload else None
    return verdict(answer, exitcode if exitcode is not None else 70, limits)


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


def verdict(answer: dict[str, Any] | None, exitcode: int, limits: ProcessLimits) -> Any:
    """The attempt's result from the child's (decoded) answer, else from how it ended (`exitcode` as
    `workers.forkserver` gives it: the exit status, or minus the signal that ended it)."""
    if answer is not None:
        _spent.seconds += answer.get("cpu", 0.0)
        if "result" in answer:
            return answer["result"]
        if "crash" in answer:  # an exception no table makes a verdict (`workers.processing.failures`)
            raise ProcessingCrashed(f"processing raised {answer['crash']}", raised=True)
        raise Rejected(RejectionCode(answer["code"]), answer["message"])
    if exitcode < 0:
        sig = signal.Signals(-exitcode)
        # SIGPROF: the attempt's own CPU timer; SIGXCPU: RLIMIT_CPU, its backstop.
        if sig in (signal.SIGXCPU, signal.SIGPROF):
            _spent.seconds += limits.cpu_seconds
            raise Rejected(
                RejectionCode.TOO_COMPLEX, f"processing needs more than {limits.cpu_seconds} s of CPU"
            )
        if sig in (signal.SIGSEGV, signal.SIGBUS, signal.SIGFPE, signal.SIGILL, signal.SIGABRT):
            raise Rejected(RejectionCode.CORRUPT, f"the decoder crashed on this file ({sig.name})")
        # SIGKILL included: no limit of the child's sends it (its memory limit is a MemoryError it reports),
        # so it came from outside (the host's OOM killer, a container limit, an operator): not a verdict.
        raise ProcessingCrashed(f"processing was stopped by {sig.name} from outside its limits")
    raise ProcessingCrashed(f"processing exited with status {exitcode} and no answer")


def _child(fds: list[int], func: Callable[..., Any], args: tuple[Any, ...], limits: ProcessLimits) -> None:
    (fd,) = fds
    out_of_memory = memory_answer(limits)  # encoded now: once memory is exhausted, nothing can be built
    data, code = b"", 70
    try:
        confine(limits)
        signal.setitimer(signal.ITIMER_PROF, limits.cpu_seconds)
        backstop = limits.cpu_seconds + 1
        resource.setrlimit(resource.RLIMIT_CPU, (backstop, backstop + 1))
        data, code, _ = answer_for(func, args, out_of_memory)
    except MemoryError:
        data, code = out_of_memory, 0
    except BaseException:
        data, code = b"", 70
    finally:
        _answer_and_exit(data, code, fd)


def memory_answer(limits: ProcessLimits) -> bytes:
    """The encoded answer for an attempt that hit its memory budget."""
    budget = limits.memory_bytes // (1024 * 1024)
    message = f"processing needs more than {budget} MiB of memory"
    return json.dumps({"code": RejectionCode.TOO_LARGE_TO_PROCESS.value, "message": message}).encode()


class Answer(NamedTuple):
    """What an attempt sends back: encoded JSON (empty for none), the exit status that goes with it, and
    whether it is a result (not a refusal)."""

    data: bytes
    code: int
    result: bool = False


def answer_for(func: Callable[..., Any], args: tuple[Any, ...], out_of_memory: bytes) -> Answer:
    """Run the attempt here: its encoded answer with status 0, or, with 70, the name of an exception that is
    not a verdict on the content (a crash: the job retries). A `MemoryError` anywhere, even
    while the answer is encoded, answers the pre-encoded `out_of_memory`."""
    started = time.process_time()  # CPU time of the whole process, every thread
    try:
        try:
            result = func(*args)
            cpu = round(time.process_time() - started, 3)
            return Answer(json.dumps({"result": result, "cpu": cpu}).encode()[:RESULT_LIMIT], 0, result=True)
        except Rejected as rejected:
            cpu = round(time.process_time() - started, 3)
            refusal = {"code": rejected.code.value, "message": rejected.message, "cpu": cpu}
            return Answer(json.dumps(refusal).encode()[:RESULT_LIMIT], 0)
    except MemoryError:
        return Answer(out_of_memory, 0)
    except BaseException as error:  # nothing is logged from a sandbox: the parent logs what it is told
        with contextlib.suppress(BaseException):
            crash = {"crash": f"{type(error).__module__}.{type(error).__qualname__}: {error}"[:2000]}
            return Answer(json.dumps(crash).encode(), 70)
        return Answer(b"", 70)


def _answer_and_exit(data: bytes, code: int, fd: int) -> None:
    try:
        write_all(fd, data)
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
