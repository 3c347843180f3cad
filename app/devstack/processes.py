"""Child processes of the local stack: start on loopback, wait until they answer, stop cleanly."""

from __future__ import annotations

import contextlib
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Mapping, Sequence
from pathlib import Path

import requests

LOOPBACK = "127.0.0.1"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind((LOOPBACK, 0))
        return int(sock.getsockname()[1])


def port_is_free(port: int, host: str = LOOPBACK) -> bool:
    """Whether `port` can be bound on `host` now (nothing listens there)."""
    with socket.socket() as sock:
        try:
            sock.bind((host, port))
        except OSError:
            return False
    return True


def descendants(pid: int) -> set[int]:
    """Every live process below `pid`, from /proc (Linux; elsewhere: none). RQ puts each work horse in a
    process group of its own, so only the process tree, not a process group, finds them all."""
    parents: dict[int, int] = {}
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            fields = stat.read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue
        if fields[0] != "Z":
            parents[int(stat.parent.name)] = int(fields[1])
    found: set[int] = set()
    frontier = {pid}
    while frontier:
        frontier = {child for child, parent in parents.items() if parent in frontier} - found
        found |= frontier
    return found


def pid_alive(pid: int) -> bool:
    """Whether `pid` runs (a zombie does not)."""
    try:
        state = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0]
    except (OSError, IndexError):
        return False
    return state != "Z"


def port_answers(host: str, port: int, timeout: float = 0.5) -> bool:
    try:
        with socket.create_connection((host, port), timeout=timeout):
            return True
    except OSError:
        return False


def http_answers(url: str, ok_only: bool = False, timeout: float = 1.0) -> bool:
    """Whether `url` answers (`ok_only`: with a 2xx) within `timeout` seconds."""
    try:
        answer = requests.get(url, timeout=timeout)
    except requests.RequestException:
        return False
    return answer.ok or not ok_only


class ManagedProcess:
    """A child process with a name, its output in a log file, stopped with SIGTERM then SIGKILL; `restart`
    runs the same command again, appending to the same log."""

    def __init__(
        self, name: str, argv: Sequence[str], log_dir: Path, env: Mapping[str, str] | None = None
    ) -> None:
        self.name = name
        self.argv = list(argv)
        self.env = {**os.environ, **(env or {})}
        log_dir.mkdir(parents=True, exist_ok=True)
        self.log_path = log_dir / f"{name}.log"
        self._log = self.log_path.open("ab")
        self.process = self._spawn()

    def _spawn(self) -> subprocess.Popen[bytes]:
        return subprocess.Popen(
            self.argv,
            stdout=self._log,
            stderr=subprocess.STDOUT,
            env=self.env,
            start_new_session=True,  # Ctrl-C reaches the supervisor, which stops children in order
        )

    def restart(self) -> None:
        """Run the command again once the last run has exited; whatever it left in its process group (a
        server's forked workers) is killed first, so the new run finds its port and its files free."""
        assert not self.alive(), f"{self.name} still runs"
        with contextlib.suppress(OSError):
            os.killpg(
                self.process.pid, signal.SIGKILL
            )  # the group outlives its leader only through leftovers
        if self._log.closed:
            self._log = self.log_path.open("ab")
        self.process = self._spawn()

    def exit_reason(self) -> str:
        """How the last run ended: `exit status 1`, `killed by SIGKILL`."""
        code = self.process.poll()
        if code is None:
            return "running"
        if code < 0:
            with contextlib.suppress(ValueError):
                return f"killed by {signal.Signals(-code).name}"
            return f"killed by signal {-code}"
        return f"exit status {code}"

    def alive(self) -> bool:
        return self.process.poll() is None

    def wait_http(self, url: str, timeout: float = 30.0, ok_only: bool = False) -> None:
        """Block until `url` answers any HTTP status (`ok_only`: a 2xx), or fail with the tail of the log."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if not self.alive():
                break
            if http_answers(url, ok_only):
                return
            time.sleep(0.1)
        raise RuntimeError(f"{self.name} did not start; last log lines:\n{self.tail()}")

    def tail(self, lines: int = 30) -> str:
        try:
            return "\n".join(self.log_path.read_text(errors="replace").splitlines()[-lines:])
        except OSError:
            return ""

    def stop(self, grace: float = 5.0) -> None:
        """SIGTERM; after `grace` seconds SIGTERM again (RQ's cold shutdown: it kills its work horse instead
        of waiting for the job); after `grace` more, SIGKILL. Whatever the child left below itself (a work
        horse, gunicorn workers) is killed last, so nothing outlives the stack."""
        below: set[int] = set()
        for _ in range(2):
            if not self.alive():
                break
            below |= descendants(self.process.pid)
            self.process.send_signal(signal.SIGTERM)
            try:
                self.process.wait(grace)
            except subprocess.TimeoutExpired:
                continue
        if self.alive():
            below |= descendants(self.process.pid)
            self.process.kill()
            self.process.wait(5)
        for pid in below | descendants(self.process.pid):
            with contextlib.suppress(OSError):
                os.kill(pid, signal.SIGKILL)
        with contextlib.suppress(OSError):  # what a run that died earlier left in its group (orphans)
            os.killpg(self.process.pid, signal.SIGKILL)
        self._log.close()


def python_module(module: str, *args: str) -> list[str]:
    """argv running a module with this interpreter (the virtualenv's, wherever it lives)."""
    return [sys.executable, "-m", module, *args]
