"""Where sandbox processes come from: a clean process that forks them, never the worker itself.

FFmpeg, libvips and glibc keep helper threads, locks and per-thread state that a `fork` does not copy: a
worker that converted one video frame before forking leaves its child's next conversion waiting forever in
`pthread_cond_destroy` (swscale's slice threads do not exist in the child). So the worker never forks a
decoder. It starts this fork server once: a fresh interpreter (`python -m workers.forkserver`) that imports
the processing modules, never decodes anything, and forks each sandbox process on request. Whatever the
worker did before, no decoder state crosses a fork.

The protocol, on a Unix socket pair: the worker sends its `sys.path` once, then per request a pickle of
`(function, args)` with the request's file descriptors attached (SCM_RIGHTS); the server forks, the child
runs `function(fds, *args)` and must end with `os._exit`, and the server answers the child's pid. When a
child ends, the server reaps it and writes its exit code (as `multiprocessing` gives it: the status, or
minus the signal) to the request's first descriptor, the child's status pipe. The server dies with the
worker (its socket reaches end of file when the worker ends, however it ends), and every sandbox process
dies with the server (`PR_SET_PDEATHSIG`, set by the child: `workers.sandbox.confine`).
"""

from __future__ import annotations

import contextlib
import os
import pickle
import select
import signal
import socket
import struct
import subprocess
import sys
import threading
from collections.abc import Callable
from typing import Any

_HEADER = struct.Struct("!I")
_PID = struct.Struct("!i")
_MAX_FDS = 8
# Imported by the server once, so each child has them: modules that decode nothing on import (libvips is
# imported by the decoding child itself: `workers.stages.webp`).
PRELOAD = ("workers.processing",)


class ForkServerGone(Exception):
    """The fork server could not be started or ended while asked for a process."""


class Child:
    """A process the fork server forked for this worker."""

    def __init__(self, pid: int, status_fd: int) -> None:
        self.pid = pid
        self._status_fd = status_fd
        self.exitcode: int | None = None

    def wait(self, timeout: float | None = None) -> int | None:
        """The exit code once the child has ended (within `timeout` seconds; None: wait as long as it takes),
        else None."""
        if self.exitcode is None:
            ready, _, _ = select.select([self._status_fd], [], [], timeout)
            if not ready:
                return None
            data = os.read(self._status_fd, 16)
            os.close(self._status_fd)
            # Nothing written: the server itself ended first, and with it the child (its death signal).
            self.exitcode = int(data) if data else -signal.SIGKILL
        return self.exitcode

    def kill(self) -> int:
        """End the child (if it still runs) and wait for it; its exit code."""
        if self.wait(0) is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, signal.SIGKILL)  # not yet reaped by the server, so the pid is still its own
        code = self.wait()
        assert code is not None
        return code


class ForkServer:
    """The worker's side: starts the server on first use (again if it died) and asks it for children."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._process: subprocess.Popen[bytes] | None = None
        self._socket: socket.socket | None = None

    def spawn(self, function: Callable[..., Any], args: tuple[Any, ...], fds: tuple[int, ...] = ()) -> Child:
        """A new process running `function(fds_in_the_child, *args)`; the caller keeps and closes `fds`."""
        request = pickle.dumps((function, args))
        status_read, status_write = os.pipe()
        try:
            with self._lock:
                for attempt in range(2):  # a server found dead is started again, once
                    connection = self._connected()
                    try:
                        _send(connection, request, (status_write, *fds))
                        pid = _PID.unpack(_receive_exactly(connection, _PID.size))[0]
                        break
                    except OSError:
                        self._discard()
                        if attempt:
                            raise ForkServerGone("the fork server ended while asked for a process") from None
        except BaseException:
            os.close(status_read)
            raise
        finally:
            os.close(status_write)
        return Child(pid, status_read)

    def stop(self) -> None:
        with self._lock:
            self._discard()

    def _connected(self) -> socket.socket:
        if self._socket is None:
            ours, theirs = socket.socketpair(socket.AF_UNIX, socket.SOCK_STREAM)
            command = [sys.executable, "-m", "workers.forkserver", str(theirs.fileno())]
            self._process = subprocess.Popen(command, pass_fds=(theirs.fileno(),), stdin=subprocess.DEVNULL)
            theirs.close()
            path = pickle.dumps(sys.path)
            ours.sendall(_HEADER.pack(len(path)) + path)
            self._socket = ours
        return self._socket

    def _discard(self) -> None:
        if self._socket is not None:
            self._socket.close()  # the server sees end of file and exits
            self._socket = None
        if self._process is not None:
            try:
                self._process.wait(5)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
            self._process = None


SERVER = ForkServer()


def _forget_in_child() -> None:
    """In a process forked from this one: its copy of the connection must not keep the server alive."""
    if SERVER._socket is not None:
        SERVER._socket.close()
    SERVER._socket, SERVER._process = None, None


os.register_at_fork(after_in_child=_forget_in_child)


def _send(connection: socket.socket, payload: bytes, fds: tuple[int, ...]) -> None:
    message = _HEADER.pack(len(payload)) + payload
    sent = socket.send_fds(connection, [message], list(fds))
    if sent < len(message):
        connection.sendall(message[sent:])


def _receive_exactly(connection: socket.socket, size: int) -> bytes:
    chunks = bytearray()
    while len(chunks) < size:
        chunk = connection.recv(size - len(chunks))
        if not chunk:
            raise ConnectionResetError("the fork server closed the connection")
        chunks += chunk
    return bytes(chunks)


# --- the server -----------------------------------------------------------------------------------------------


def serve(fd: int) -> None:
    connection = socket.socket(fileno=fd)
    (length,) = _HEADER.unpack(_receive_exactly(connection, _HEADER.size))
    sys.path[:] = pickle.loads(_receive_exactly(connection, length))
    for module in PRELOAD:
        __import__(module)
    statuses: dict[int, int] = {}  # pid -> the write end of its status pipe
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    signal.set_wakeup_fd(wake_write)
    signal.signal(signal.SIGCHLD, lambda *_: None)  # wakes the select below through the wakeup fd
    while True:
        ready, _, _ = select.select([connection, wake_read], [], [])
        if wake_read in ready:
            os.read(wake_read, 4096)
            _reap(statuses)
        if connection in ready:
            request = _receive_request(connection)
            if request is None:
                return  # the worker closed its end; the children die with this process
            payload, fds = request
            pid = os.fork()
            if pid == 0:
                _run_child(payload, fds, keep=fds[1:])
            statuses[pid] = fds[0]
            for received in fds[1:]:
                os.close(received)
            connection.sendall(_PID.pack(pid))


def _receive_request(connection: socket.socket) -> tuple[bytes, list[int]] | None:
    try:
        header, fds, _, _ = socket.recv_fds(connection, _HEADER.size, _MAX_FDS)
    except ConnectionResetError:
        return None
    if not header:
        return None
    header += _receive_exactly(connection, _HEADER.size - len(header))
    (length,) = _HEADER.unpack(header)
    return _receive_exactly(connection, length), fds


def _reap(statuses: dict[int, int]) -> None:
    while statuses:
        try:
            pid, status = os.waitpid(-1, os.WNOHANG)
        except ChildProcessError:
            return
        if pid == 0:
            return
        status_fd = statuses.pop(pid, None)
        if status_fd is not None:
            with contextlib.suppress(OSError):
                os.write(status_fd, str(os.waitstatus_to_exitcode(status)).encode())
            os.close(status_fd)


def _run_child(payload: bytes, fds: list[int], keep: list[int]) -> None:
    code = 70  # the function should end the process itself; an exception that escapes it is a crash
    try:
        signal.set_wakeup_fd(-1)
        signal.signal(signal.SIGCHLD, signal.SIG_DFL)
        _close_all_but(keep)
        function, args = pickle.loads(payload)
        function(keep, *args)
        code = 0
    finally:
        os._exit(code)


def _close_all_but(keep: list[int]) -> None:
    """Close every descriptor but stdio and `keep`: the server's socket, other children's status pipes."""
    low = 3
    for fd in sorted(keep):
        os.closerange(low, fd)
        low = fd + 1
    os.closerange(low, os.sysconf("SC_OPEN_MAX"))


if __name__ == "__main__":
    serve(int(sys.argv[1]))
