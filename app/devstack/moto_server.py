"""The local stack's moto server: `moto.server` as it ships, with the service lookup of each request cached.

moto's server finds the service a request is for by its host name. On loopback (`127.0.0.1:<port>`) no name
matches, so for every request it lists moto's package directory (`os.listdir`, then `isdir` on each of ~200
entries) and tries every service's URL patterns, under one lock. That lookup was a third of moto's time on a
photo's DELETE. Its answer depends on the host name alone, so it is kept per host name.

    python -m app.devstack.moto_server --port 5000
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from types import FrameType
from typing import Any

from moto.moto_server.werkzeug_app import (
    DomainDispatcherApplication,
    MotoRequestHandler,
    create_backend_app,
)
from werkzeug.serving import run_simple


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


def _exit(signum: int, frame: FrameType | None) -> None:
    sys.exit(0)


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m app.devstack.moto_server", description=__doc__.split("\n")[0]
    )
    parser.add_argument("--host", default="127.0.0.1")
    parser.add_argument("--port", type=int, required=True)
    args = parser.parse_args(argv)
    os.environ.setdefault("MOTO_PORT", str(args.port))  # as `moto.server` does: URLs moto builds name it
    signal.signal(signal.SIGTERM, _exit)
    # As `moto.server` serves it: a thread per connection, S3 metadata headers keep their underscores.
    run_simple(args.host, args.port, CachedDispatcher(), threaded=True, request_handler=MotoRequestHandler)


if __name__ == "__main__":
    main()
