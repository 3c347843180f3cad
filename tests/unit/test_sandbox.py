"""The processing sandbox: a real child process under real rlimits, killed for real."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import pytest

from app.domain.rejections import Rejected, RejectionCode
from workers.sandbox import ProcessingCrashed, ProcessLimits, run_limited

LIMITS = ProcessLimits(cpu_seconds=2, memory_bytes=128 * 1024 * 1024)


def _burn() -> None:
    while True:
        pass


def _allocate(megabytes: int) -> int:
    return len(bytearray(megabytes * 1024 * 1024))


def _refuse() -> None:
    raise Rejected(RejectionCode.CORRUPT, "not an image")


def _crash(sig: int) -> None:
    os.kill(os.getpid(), sig)


def test_the_result_comes_back_as_json():
    assert run_limited(lambda a, b: {"sum": a + b}, 2, 3, limits=LIMITS) == {"sum": 5}


def test_a_rejection_in_the_child_is_a_rejection_in_the_parent():
    with pytest.raises(Rejected) as refused:
        run_limited(_refuse, limits=LIMITS)
    assert refused.value.code is RejectionCode.CORRUPT
    assert refused.value.message == "not an image"


def test_cpu_beyond_the_limit_is_too_complex_and_stops_at_the_limit():
    started = time.monotonic()
    with pytest.raises(Rejected) as refused:
        run_limited(_burn, limits=ProcessLimits(cpu_seconds=1, memory_bytes=64 * 1024 * 1024))
    assert refused.value.code is RejectionCode.TOO_COMPLEX
    assert time.monotonic() - started < 20  # 1 s of CPU, however busy the machine; never the job timeout


def test_memory_beyond_the_limit_is_too_large_to_process():
    assert run_limited(_allocate, 32, limits=LIMITS) == 32 * 1024 * 1024  # within the budget: fine
    with pytest.raises(Rejected) as refused:
        run_limited(_allocate, 512, limits=LIMITS)
    assert refused.value.code is RejectionCode.TOO_LARGE_TO_PROCESS


def test_a_child_that_blocks_without_cpu_is_stopped_at_the_wall_clock_deadline():
    started = time.monotonic()
    with pytest.raises(Rejected) as refused:
        run_limited(time.sleep, 60, limits=ProcessLimits(1, 64 * 1024 * 1024, wall_seconds=1))
    assert refused.value.code is RejectionCode.TOO_COMPLEX
    assert time.monotonic() - started < 15


def test_a_decoder_crash_is_corrupt_and_another_death_is_not_a_verdict():
    with pytest.raises(Rejected) as refused:
        run_limited(_crash, signal.SIGSEGV, limits=LIMITS)
    assert refused.value.code is RejectionCode.CORRUPT
    with pytest.raises(ProcessingCrashed):
        run_limited(_crash, signal.SIGTERM, limits=LIMITS)


def _state(pid: int) -> str | None:
    """The process's state letter, or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def test_the_child_dies_with_its_parent(tmp_path: Path):
    """A worker killed mid-job (SIGKILL: no handler runs) must not leave its decoder running alone."""
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        import os, time
        from pathlib import Path
        from workers.sandbox import ProcessLimits, run_limited

        def work():
            Path({str(pid_file)!r}).write_text(str(os.getpid()))
            while True:
                pass

        run_limited(work, limits=ProcessLimits(cpu_seconds=120, memory_bytes=64 * 1024 * 1024))
        """
    )
    parent = subprocess.Popen([sys.executable, "-c", script], cwd=Path(__file__).parents[2])
    try:
        deadline = time.monotonic() + 30
        while not pid_file.exists() or not pid_file.read_text():
            assert time.monotonic() < deadline, "the child never started"
            time.sleep(0.05)
        child = int(pid_file.read_text())
        assert _state(child) not in (None, "Z")
        parent.send_signal(signal.SIGKILL)
        parent.wait(10)
        deadline = time.monotonic() + 10
        while _state(child) not in (None, "Z"):
            assert time.monotonic() < deadline, "the child outlived its parent"
            time.sleep(0.05)
    finally:
        parent.kill()
        parent.wait(10)
