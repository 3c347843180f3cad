"""The processing sandbox: a real child process under real rlimits, killed for real.

Every verdict is checked twice: in a fresh child per attempt, and in a sandbox host serving several attempts
(`workers.sandbox_host`), which must answer the same. The host's own life is in `test_sandbox_host.py`.
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.domain.rejections import Rejected, RejectionCode
from workers.sandbox import ProcessingCrashed, ProcessLimits
from workers.sandbox_host import run_attempt, stop_hosts


@pytest.fixture(autouse=True)
def no_host_left() -> Iterator[None]:
    yield
    stop_hosts()


@pytest.fixture(params=[1, 4], ids=["fresh", "hosted"])
def attempts(request: pytest.FixtureRequest) -> int:
    return request.param


def limits(
    attempts: int, cpu_seconds: int = 2, memory_mib: int = 128, wall: float | None = None
) -> ProcessLimits:
    return ProcessLimits(cpu_seconds, memory_mib * 1024 * 1024, wall, attempts_per_process=attempts)


def _add(a: int, b: int) -> dict[str, int]:
    return {"sum": a + b}


def _burn() -> None:
    while True:
        pass


def _allocate(megabytes: int) -> int:
    return len(bytearray(megabytes * 1024 * 1024))


def _refuse() -> None:
    raise Rejected(RejectionCode.CORRUPT, "not an image")


def _crash(sig: int) -> None:
    os.kill(os.getpid(), sig)


def _convert_a_frame() -> list[int]:
    import av
    from PIL import Image

    frame = av.VideoFrame.from_image(Image.new("RGB", (64, 48))).reformat(format="yuv420p")
    return list(frame.to_image().size)


def test_a_child_converts_frames_after_the_worker_did(attempts: int):
    """FFmpeg's swscale keeps per-thread helper threads: a frame converted here before a plain fork left the
    child's first conversion waiting forever. Children come from the fork server, which never decodes."""
    import av
    from PIL import Image

    av.VideoFrame.from_image(Image.new("RGB", (64, 48))).reformat(format="yuv420p")  # as tests/videos.py does
    assert run_attempt(_convert_a_frame, limits=limits(attempts, wall=30)) == [64, 48]


def test_the_result_comes_back_as_json(attempts: int):
    assert run_attempt(_add, 2, 3, limits=limits(attempts)) == {"sum": 5}


def test_a_rejection_in_the_child_is_a_rejection_in_the_parent(attempts: int):
    with pytest.raises(Rejected) as refused:
        run_attempt(_refuse, limits=limits(attempts))
    assert refused.value.code is RejectionCode.CORRUPT
    assert refused.value.message == "not an image"


def test_cpu_beyond_the_limit_is_too_complex_and_stops_at_the_limit(attempts: int):
    started = time.monotonic()
    with pytest.raises(Rejected) as refused:
        run_attempt(_burn, limits=limits(attempts, cpu_seconds=1, memory_mib=64))
    assert refused.value.code is RejectionCode.TOO_COMPLEX
    assert time.monotonic() - started < 20  # 1 s of CPU, however busy the machine; never the job timeout


def test_memory_beyond_the_limit_is_too_large_to_process(attempts: int):
    assert run_attempt(_allocate, 32, limits=limits(attempts)) == 32 * 1024 * 1024  # within the budget
    with pytest.raises(Rejected) as refused:
        run_attempt(_allocate, 512, limits=limits(attempts))
    assert refused.value.code is RejectionCode.TOO_LARGE_TO_PROCESS


def test_a_child_that_blocks_without_cpu_is_stopped_at_the_wall_clock_deadline(attempts: int):
    started = time.monotonic()
    with pytest.raises(Rejected) as refused:
        run_attempt(time.sleep, 60, limits=limits(attempts, cpu_seconds=1, memory_mib=64, wall=1))
    assert refused.value.code is RejectionCode.TOO_COMPLEX
    assert time.monotonic() - started < 15


def test_a_decoder_crash_is_corrupt_and_another_death_is_not_a_verdict(attempts: int):
    with pytest.raises(Rejected) as refused:
        run_attempt(_crash, signal.SIGSEGV, limits=limits(attempts))
    assert refused.value.code is RejectionCode.CORRUPT
    with pytest.raises(ProcessingCrashed):
        run_attempt(_crash, signal.SIGTERM, limits=limits(attempts))


def spin_recording_pid(pid_file: str) -> None:
    """Write this process's pid to `pid_file`, then burn CPU until killed."""
    Path(pid_file).write_text(str(os.getpid()))
    while True:
        pass


def _state(pid: int) -> str | None:
    """The process's state letter, or None once it is gone."""
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (FileNotFoundError, ProcessLookupError):
        return None


def test_the_child_dies_with_its_parent(tmp_path: Path, attempts: int):
    """A worker killed mid-job (SIGKILL: no handler runs) must not leave its decoder running alone."""
    pid_file = tmp_path / "child.pid"
    script = textwrap.dedent(
        f"""
        from tests.unit.test_sandbox import spin_recording_pid
        from workers.sandbox import ProcessLimits
        from workers.sandbox_host import run_attempt

        limits = ProcessLimits(120, 64 * 1024 * 1024, attempts_per_process={attempts})
        run_attempt(spin_recording_pid, {str(pid_file)!r}, limits=limits)
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


def _raise_unlisted() -> None:
    raise NotImplementedError("an /Encrypt /V 99 handler")


def test_an_exception_no_table_judges_is_a_crash_that_names_it(attempts: int):
    with pytest.raises(ProcessingCrashed) as crashed:
        run_attempt(_raise_unlisted, limits=limits(attempts))
    assert "NotImplementedError: an /Encrypt /V 99 handler" in str(crashed.value)
