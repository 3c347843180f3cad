"""The production WSGI server: gunicorn, configured in layers so `broker serve` needs no extra files.

Lowest to highest: the defaults below, a gunicorn config file (`broker serve --config FILE`, else
`GUNICORN_CONFIG`, else `--config` inside `GUNICORN_CMD_ARGS`), `GUNICORN_CMD_ARGS`, then the options given to
`broker serve` explicitly. Logs are JSON (`GunicornLogger`); gunicorn's own refusals are JSON errors
(`JsonErrorThreadWorker`); the control socket is per instance, so two servers on one host never share one.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path
from typing import Any

from flask import Flask
from gunicorn.app.base import Application

from app.factory import create_app
from app.logging_setup import configure_logging

DEFAULTS: dict[str, Any] = {
    "bind": ["127.0.0.1:8000"],
    "workers": 2,  # one per core of the 2-core hosts the service runs on
    "worker_class": "app.server_worker.JsonErrorThreadWorker",
    "threads": 4,
    # A listening socket per worker (SO_REUSEPORT): the kernel spreads new connections evenly over the
    # workers. On one shared socket whichever worker wakes first takes them, and a client's keep-alive
    # connections (a load balancer's, a phone's) can all land on one process, leaving the other core idle:
    # measured here, /healthz swung between ~2,000 and ~5,400 req/s from run to run by that alone.
    "reuse_port": True,
    "timeout": 30,
    "graceful_timeout": 10,
    "accesslog": "-",
    "errorlog": "-",
    "logger_class": "app.logging_setup.GunicornLogger",
}


def control_socket_path(binds: list[str]) -> str:
    """gunicorn's default control socket is one fixed path per user (`$XDG_RUNTIME_DIR/gunicorn.ctl`): a
    second instance would take it over. One per listening address instead (two servers cannot share one)."""
    runtime = os.environ.get("XDG_RUNTIME_DIR") or tempfile.gettempdir()
    name = "_".join(binds).replace("/", "_").replace(":", "-")
    directory = Path(runtime) / f"upload-broker-{os.getuid()}"
    directory.mkdir(mode=0o700, exist_ok=True)
    return str(directory / f"gunicorn-{name}.ctl")


class BrokerServer(Application):  # type: ignore[misc]
    def __init__(self, explicit: dict[str, Any], config_file: str | None) -> None:
        self.explicit = explicit
        self.config_file = config_file
        super().__init__()

    def init(self, parser: Any, opts: Any, args: Any) -> None:
        return None

    def load_config(self) -> None:
        for key, value in DEFAULTS.items():
            self.cfg.set(key, value)
        default_socket = self.cfg.control_socket
        env_args = self.cfg.parser().parse_args(self.cfg.get_cmd_args_from_env())
        config_file = self.config_file or os.environ.get("GUNICORN_CONFIG") or env_args.config
        if config_file:
            self.load_config_from_file(config_file)
        for layer in (vars(env_args), self.explicit):
            for key, value in layer.items():
                if value is not None and key not in ("args", "config"):
                    self.cfg.set(key.lower(), value)
        if self.cfg.control_socket == default_socket:  # nobody chose one
            self.cfg.set("control_socket", control_socket_path(self.cfg.bind))

    def load(self) -> Flask:
        configure_logging()
        return create_app()


def run_gunicorn(
    host: str | None, port: int | None, workers: int | None, config_file: str | None = None
) -> None:
    explicit: dict[str, Any] = {"workers": workers}
    if host is not None or port is not None:
        explicit["bind"] = [f"{host or '127.0.0.1'}:{port or 8000}"]
    BrokerServer(explicit, config_file).run()
