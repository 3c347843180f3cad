"""Redis for the local stack: the configured one if it answers, else a private redis-server on loopback."""

from __future__ import annotations

import shutil
import time
from pathlib import Path

from redis import Redis
from redis.exceptions import RedisError

from app.devstack.processes import LOOPBACK, ManagedProcess, free_port, port_answers


def redis_answers(url: str) -> bool:
    try:
        return bool(Redis.from_url(url, socket_connect_timeout=1, socket_timeout=1).ping())
    except RedisError:
        return False


def start_redis(log_dir: Path) -> tuple[str, ManagedProcess]:
    """A throw-away redis-server (no persistence) bound to loopback on a free port."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError(
            "no Redis answers at BROKER_REDIS_URL and redis-server is not installed "
            "(Debian: apt-get install redis-server)"
        )
    port = free_port()
    argv = [binary, "--bind", LOOPBACK, "--port", str(port), "--save", "", "--appendonly", "no"]
    process = ManagedProcess("redis", argv, log_dir)
    for _ in range(100):
        if port_answers(LOOPBACK, port):
            return f"redis://{LOOPBACK}:{port}/0", process
        if not process.alive():
            break
        time.sleep(0.05)
    process.stop()
    raise RuntimeError(f"redis-server did not start:\n{process.tail()}")
