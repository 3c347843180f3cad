"""`broker serve`'s default server: waitress, one process per core, each with its own listening socket.

Why not gunicorn alone: its threaded worker hands a connection to a thread as soon as the headers are in,
and the thread then blocks reading the body. Eight clients that send half a body held all 2 x 4 threads and
`/healthz` timed out (3 of 5 probes; 64 clients: 5 of 5). waitress reads each request, body included, in its
event loop and only hands *complete* requests to its threads, so a slow client costs a socket, not a thread
(measured: 8 and 64 slow clients, every probe answered in < 0.1 s). Its body cap (`BROKER_MAX_REQUEST_BYTES`)
bounds what is buffered. gunicorn stays available (`--server gunicorn`) for a deployment behind a proxy
that buffers requests itself (nginx with `proxy_request_buffering on`).

The parent holds the address (bound, not listening), forks the processes and restarts one that dies;
SIGTERM or SIGINT stops them. Each process listens on a socket of its own with SO_REUSEPORT, so the kernel
spreads new connections evenly over them: on one shared socket whichever process woke first took them, and a
client's keep-alive connections could all land on one process while the other core idled.
"""

from __future__ import annotations

import json
import logging
import os
import signal
import socket
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from types import FrameType
from typing import Any

from waitress.channel import HTTPChannel
from waitress.server import TcpWSGIServer, create_server
from waitress.task import ErrorTask

from app.api.edge import WEBHOOK_MAX_BYTES

log = logging.getLogger("upload_broker.server")
THREADS = 4
CHANNEL_TIMEOUT = 30  # seconds a connection may stay silent, mid-request or idle, before it is closed
CONNECTION_LIMIT = 1000  # open connections per process (slow clients included) before accepting pauses
# Request line plus headers; bounds what each connection can make the loop buffer before the body. A longer
# line or more headers is a 431 (waitress does not tell a long request line apart).
MAX_HEADER_BYTES = 16_000
STOP_GRACE_SECONDS = 15  # requests in flight get this long to finish after SIGTERM, then SIGKILL
ERROR_CODES = {
    400: "bad_request",
    413: "request_too_large",
    431: "request_header_fields_too_large",
    501: "not_implemented",
}
Environ = dict[str, Any]
StartResponse = Callable[..., Any]
Wsgi = Callable[[Environ, StartResponse], Iterable[bytes]]


class JsonErrorTask(ErrorTask):  # type: ignore[misc]
    """waitress's own refusals (malformed request, headers or body too large) in the API's error shape."""

    def execute(self) -> None:
        error = self.request.error
        code = ERROR_CODES.get(error.code, "internal_error")
        body = json.dumps({"error": {"code": code, "message": error.reason.lower()}}).encode()
        self.status = f"{error.code} {error.reason}"
        self.response_headers.extend(
            [("Content-Type", "application/json"), ("Content-Length", str(len(body)))]
        )
        self.set_close_on_finish()
        self.content_length = len(body)
        self.write(body)


class JsonErrorChannel(HTTPChannel):  # type: ignore[misc]
    error_task_class = JsonErrorTask


def access_logged(app: Wsgi) -> Wsgi:
    """One JSON `request` line per request (waitress has no access log of its own)."""
    access = logging.getLogger("upload_broker.access")

    def wrapped(environ: Environ, start_response: StartResponse) -> Iterator[bytes]:
        started, seen = time.monotonic(), {"status": "-", "bytes": 0}

        def recording_start_response(status: str, headers: list[tuple[str, str]], *exc: Any) -> Any:
            seen["status"] = status.split(None, 1)[0]
            return start_response(status, headers, *exc)

        body = app(environ, recording_start_response)
        try:
            for chunk in body:
                seen["bytes"] += len(chunk)
                yield chunk
        finally:
            close = getattr(body, "close", None)
            if close:
                close()
            access.info(
                "request",
                extra={
                    "remote": environ.get("REMOTE_ADDR"),
                    "method": environ.get("REQUEST_METHOD"),
                    "path": environ.get("PATH_INFO"),
                    "query": environ.get("QUERY_STRING") or None,
                    "status": int(seen["status"]) if str(seen["status"]).isdigit() else seen["status"],
                    "bytes": seen["bytes"],
                    "duration_ms": round((time.monotonic() - started) * 1000, 3),
                    "user_agent": environ.get("HTTP_USER_AGENT"),
                    "pid": os.getpid(),
                },
            )

    return wrapped


def _serve(host: str, port: int, threads: int) -> None:
    """One server process: never returns."""
    from app.config import get_settings
    from app.factory import create_app
    from app.logging_setup import configure_logging

    signal.signal(signal.SIGINT, signal.SIG_IGN)  # the parent decides; it sends SIGTERM
    configure_logging()
    listener = socket.create_server((host, port), backlog=1024, reuse_port=True)
    TcpWSGIServer.channel_class = JsonErrorChannel
    server = create_server(
        access_logged(create_app()),
        sockets=[listener],
        threads=threads,
        channel_timeout=CHANNEL_TIMEOUT,
        connection_limit=CONNECTION_LIMIT,
        max_request_header_size=MAX_HEADER_BYTES,
        # waitress caps every route alike, so at the largest route cap (the webhook's, for SNS messages);
        # the app refuses the other routes' bodies at their own, smaller cap (`app.api.edge`).
        max_request_body_size=max(get_settings().max_request_bytes, WEBHOOK_MAX_BYTES),
        ident=None,
        clear_untrusted_proxy_headers=True,
    )

    def stop(_signum: int, _frame: FrameType | None) -> None:
        raise SystemExit(0)

    signal.signal(signal.SIGTERM, stop)
    try:
        server.run()
    except SystemExit:
        pass
    finally:
        server.task_dispatcher.shutdown(timeout=10)  # requests in flight finish
        os._exit(0)


def run_waitress(host: str, port: int, processes: int, threads: int = THREADS) -> None:
    from app.logging_setup import configure_logging

    configure_logging()
    try:
        address = _hold_address(host, port)
    except OSError as error:
        log.error("cannot listen", extra={"address": f"{host}:{port}", "error": str(error)})
        sys.exit(2)
    children: set[int] = set()
    stopping = False

    def spawn() -> None:
        pid = os.fork()
        if pid == 0:
            address.close()
            _serve(host, port, threads)
        children.add(pid)

    def stop(_signum: int, _frame: FrameType | None) -> None:
        nonlocal stopping
        stopping = True
        for pid in children:
            os.kill(pid, signal.SIGTERM)

    signal.signal(signal.SIGTERM, stop)
    signal.signal(signal.SIGINT, stop)
    for _ in range(processes):
        spawn()
    log.info("listening", extra={"address": f"{host}:{port}", "processes": processes, "threads": threads})
    stop_deadline: float | None = None
    while children:
        pid, status = os.waitpid(-1, os.WNOHANG)
        if pid == 0:
            if stopping and stop_deadline is None:
                stop_deadline = time.monotonic() + STOP_GRACE_SECONDS
            if stop_deadline is not None and time.monotonic() > stop_deadline:
                for child in children:  # a process that cannot finish its requests in time
                    os.kill(child, signal.SIGKILL)
            time.sleep(0.2)
            continue
        children.discard(pid)
        if not stopping:
            log.error("server process exited; starting another", extra={"pid": pid, "status": status})
            time.sleep(1)  # a process that dies at start-up must not become a fork loop
            spawn()
    address.close()


def _hold_address(host: str, port: int) -> socket.socket:
    """The address, bound with SO_REUSEPORT but not listening: a port in use fails here, before any process
    starts, and no other program can take it meanwhile; a socket that does not listen gets no connections."""
    family = socket.AF_INET6 if ":" in host else socket.AF_INET
    holder = socket.socket(family, socket.SOCK_STREAM)
    try:
        holder.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        holder.bind((host, port))
    except OSError:
        holder.close()
        raise
    return holder
