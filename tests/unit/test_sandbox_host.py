"""The sandbox host's own life: which attempts share a process, and what makes it give way to a new one.

Real processes throughout; each attempt reports the pid it ran in.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.domain.rejections import Rejected, RejectionCode
from workers import sandbox_host
from workers.sandbox import ProcessLimits
from workers.sandbox_host import run_attempt, stop_hosts

MIB = 1024 * 1024


@pytest.fixture(autouse=True)
def no_host_left() -> Iterator[None]:
    yield
    stop_hosts()


def limits(attempts: int = 5, cpu_seconds: int = 2, memory_mib: int = 128) -> ProcessLimits:
    return ProcessLimits(cpu_seconds, memory_mib * MIB, attempts_per_process=attempts)


def _pid() -> int:
    return os.getpid()


def _refuse() -> None:
    raise Rejected(RejectionCode.CORRUPT, "not an image")


def _burn_cpu(seconds: float) -> int:
    """Spin for `seconds` of this process's CPU time; the pid."""
    start = time.process_time()
    while time.process_time() - start < seconds:
        pass
    return os.getpid()


def _allocate_and_free(megabytes: int) -> int:
    block = bytearray(megabytes * MIB)
    block[::4096] = b"x" * len(block[::4096])  # touch every page
    del block
    return os.getpid()


def _open_descriptors() -> list[int]:
    return sorted(int(name) for name in os.listdir("/proc/self/fd"))


def _starts(caplog: pytest.LogCaptureFixture) -> list[dict[str, object]]:
    """What each "sandbox process started" log line says of the process before it."""
    return [
        {name: getattr(record, name, None) for name in ("pid", "previous_pid", "previous_ended")}
        for record in caplog.records
        if record.getMessage() == "sandbox process started"
    ]


def test_consecutive_attempts_share_one_process_until_its_quota(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="workers.sandbox_host")
    pids = [run_attempt(_pid, limits=limits(attempts=3)) for _ in range(7)]
    assert pids[0] != os.getpid()
    assert pids[0] == pids[1] == pids[2]
    assert pids[3] == pids[4] == pids[5] != pids[0]
    assert pids[6] not in (pids[0], pids[3])
    assert _starts(caplog) == [
        {"pid": pids[0], "previous_pid": None, "previous_ended": None},
        {"pid": pids[3], "previous_pid": pids[0], "previous_ended": "quota"},
        {"pid": pids[6], "previous_pid": pids[3], "previous_ended": "quota"},
    ]


def test_one_attempt_per_process_is_a_fresh_child_each_time():
    pids = {run_attempt(_pid, limits=limits(attempts=1)) for _ in range(3)}
    assert len(pids) == 3


def test_after_a_refusal_the_next_attempt_gets_a_new_process(caplog: pytest.LogCaptureFixture):
    caplog.set_level(logging.INFO, logger="workers.sandbox_host")
    first = run_attempt(_pid, limits=limits())
    assert run_attempt(_pid, limits=limits()) == first
    with pytest.raises(Rejected):
        run_attempt(_refuse, limits=limits())
    assert run_attempt(_pid, limits=limits()) != first
    assert _starts(caplog)[-1]["previous_ended"] == "refused"


def test_the_cpu_budget_is_per_attempt_not_per_process(caplog: pytest.LogCaptureFixture):
    """Three attempts of 0.6 s each in one host with a 1 s budget: none breaches; a 3 s one does."""
    budget = limits(cpu_seconds=1)
    pids = {run_attempt(_burn_cpu, 0.6, limits=budget) for _ in range(3)}
    assert len(pids) == 1
    with pytest.raises(Rejected) as refused:
        run_attempt(_burn_cpu, 3.0, limits=budget)
    assert refused.value.code is RejectionCode.TOO_COMPLEX
    caplog.set_level(logging.INFO, logger="workers.sandbox_host")
    assert run_attempt(_pid, limits=budget) not in pids  # the breach ended that host
    assert _starts(caplog)[-1]["previous_ended"] == "killed by SIGPROF"


def test_memory_freed_by_an_attempt_is_there_for_the_next_one():
    """100 MiB of a 128 MiB budget, three times in a row, in one host."""
    pids = {run_attempt(_allocate_and_free, 100, limits=limits()) for _ in range(3)}
    assert len(pids) == 1
    with pytest.raises(Rejected) as refused:
        run_attempt(_allocate_and_free, 200, limits=limits())
    assert refused.value.code is RejectionCode.TOO_LARGE_TO_PROCESS


def test_an_idle_host_exits_and_the_next_attempt_starts_a_new_one(
    monkeypatch: pytest.MonkeyPatch, caplog: pytest.LogCaptureFixture
):
    monkeypatch.setattr(sandbox_host, "IDLE_SECONDS", 0.3)
    first = run_attempt(_pid, limits=limits())
    deadline = time.monotonic() + 10
    while Path(f"/proc/{first}").exists():  # the fork server reaps it as soon as it exits
        assert time.monotonic() < deadline, "the idle host did not exit"
        time.sleep(0.05)
    caplog.set_level(logging.INFO, logger="workers.sandbox_host")
    second = run_attempt(_pid, limits=limits())  # sent to the exited host first: resent to a new one
    assert second != first
    assert _starts(caplog)[-1] == {"pid": second, "previous_pid": first, "previous_ended": "idle"}


def test_the_host_holds_none_of_the_workers_descriptors(tmp_path: Path):
    """A connection the worker closes must really close; only stdio and the host's two pipes stay."""
    listener = socket.create_server(("127.0.0.1", 0))
    held = (tmp_path / "held").open("w")
    try:
        descriptors = run_attempt(_open_descriptors, limits=limits())
    finally:
        listener.close()
        held.close()
    beyond_stdio = [fd for fd in descriptors if fd > 2]
    assert len(beyond_stdio) == 2 + 1  # the host's two pipes and the directory being listed


def test_another_thread_gets_a_fresh_child_and_the_host_lives_on():
    """A host serves one attempt at a time: it belongs to the main thread, where the worker runs jobs."""
    host = run_attempt(_pid, limits=limits())
    results: list[int] = []
    other = threading.Thread(target=lambda: results.append(run_attempt(_pid, limits=limits())))
    other.start()
    other.join(10)
    assert results and results[0] not in (host, os.getpid())
    assert run_attempt(_pid, limits=limits()) == host
