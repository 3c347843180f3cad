"""The local stack's moto server: `moto.server` as it ships, with the service lookup of each request cached.

moto's server finds the service a request is for by its host name. On loopback (`127.0.0.1:<port>`) no name
matches, so for every request it lists moto's package directory (`os.listdir`, then `isdir` on each of ~200
entries) and tries every service's URL patterns, under one lock. That lookup was a third of moto's time on a
photo's DELETE. Its answer depends on the host name alone, so it is kept per host name.

    python -m app.devstack.moto_server --port 5000 [--provision '<Wiring as JSON>']

With `--provision`, the server makes the stack's buckets, topic and wiring as soon as it listens
(`app.devstack.provision`) and answers everyone else 503 until they exist, so a restarted moto is never seen
without them.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import threading
import time
from collections.abc import Callable, Iterable
from types import FrameType
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple

from app.devstack.local_s3 import PROVISIONED_PATH, PROVISIONING_HEADER
from app.devstack.processes import port_answers

StartResponse = Callable[..., Any]
# S3's own answer while it cannot serve; every S3 client retries it.
UNAVAILABLE = (
    b'<?xml version="1.0" encoding="UTF-8"?>\n<Error><Code>ServiceUnavailable</Code>'
    b"<Message>the local S3 is starting: its buckets and topic are being made</Message></Error>"
)
PROVISION_TRIES = 5
LISTEN_TIMEOUT = 30.0


class CachedDispatcher(DomainDispatcherApplication):  # type: ignore[misc]
    """moto's dispatcher, remembering the backend it found for each host name."""

    def __init__(self) -> None:
        super().__init__(create_backend_app)
        self._backends: dict[str | None, Any] = {}

    def get_backend_for_host(self, host: str | None) -> Any:
        # Called under the dispatcher's own lock, so the dict needs none of its own.
        if host not in self._backends:
            self._backends[host] = super().get_backend_for_host(host)
        return self._backends[host]


class UntilProvisioned:
    """WSGI: moto for the provisioner (its header) and, once `done` is set, for everyone; 503 before."""

    def __init__(self, app: Callable[[dict[str, Any], StartResponse], Iterable[bytes]]) -> None:
        self.app = app
        self.done = threading.Event()
        self._header = "HTTP_" + PROVISIONING_HEADER.upper().replace("-", "_")

    def __call__(self, environ: dict[str, Any], start_response: StartResponse) -> Iterable[bytes]:
        if environ.get("PATH_INFO") == PROVISIONED_PATH:
            status = "200 OK" if self.done.is_set() else "503 Service Unavailable"
            start_response(status, [("Content-Type", "text/plain"), ("Content-Length", "0")])
            return [b""]
        if self.done.is_set() or environ.get(self._header):
            return self.app(environ, start_response)
        headers = [("Content-Type", "application/xml"), ("Content-Length", str(len(UNAVAILABLE)))]
        start_response("503 Service Unavailable", [*headers, ("Retry-After", "1")])
        return [UNAVAILABLE]


def _provision_when_listening(host: str, port: int, wiring_json: str, gate: UntilProvisioned) -> None:
    """Provision once the server listens; if it cannot, exit (the supervisor starts a fresh moto)."""
    from app.devstack.provision import Wiring, provision  # boto3 and the template: only when provisioning

    wiring = Wiring.from_json(wiring_json)
    deadline = time.monotonic() + LISTEN_TIMEOUT
    while not port_answers(host, port) and time.monotonic() < deadline:
        time.sleep(0.05)
    for attempt in range(1, PROVISION_TRIES + 1):
        try:
            topic_arn = provision(f"http://{host}:{port}", wiring)
        except Exception as error:  # any failure means: not provisioned, try again
            print(f"provisioning failed (try {attempt} of {PROVISION_TRIES}): {error!r}", flush=True)
            time.sleep(0.5 * attempt)
            continue
        gate.done.set()
        print(f"provisioned: buckets {', '.join(wiring.buckets)}; topic {topic_arn}", flush=True)
        return
    os._exit(3)


def _exit(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m app.devstack.moto_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    parser.add_argument(
        "--provision", metavar="WIRING_JSON", help="make these buckets, topic and wiring first"
    )
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as `moto.server` does: URLs moto builds name it
    signal.signal(signal.SIGTERM, _exit)
    app: Any = CachedDispatcher()
    if args.provision:
        app = UntilProvisioned(app)
        threading.Thread(
            target=_provision_when_listening,
            args=(args.host, args.port, args.provision, app),
            name="provision",
            daemon=True,
        ).start()
    # As `moto.server` serves it: a thread per connection, S3 metadata headers keep their underscores.
    run_simple(args.host, args.port, app, threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
