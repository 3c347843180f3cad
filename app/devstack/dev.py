"""`broker dev`: the whole service on one machine, with nothing but this checkout.

One supervisor process starts, in order: Redis (the configured one if it answers, else a private one), the
local S3 + SNS (moto behind the POST-policy gate), the database schema (SQLite under ./var), the API, the
S3 → SNS → webhook wiring, a worker, and the scheduler of the lifecycle sweeps. Ctrl-C or SIGTERM stops
them in reverse order, work horses included.
"""

from __future__ import annotations

import signal
import time
from pathlib import Path
from types import FrameType

import click

from app.auth import mint_token
from app.config import get_settings
from app.devstack.dev_env import effective_env, stack_env, user_set, write_dev_env
from app.devstack.local_s3 import create_bucket, create_topic, start_local_s3, wire_notifications
from app.devstack.processes import LOOPBACK, ManagedProcess, port_is_free, python_module
from app.devstack.redis_server import redis_answers, start_redis
from app.migrate import upgrade

VAR = Path("var")
LOGS = VAR / "log"
DEV_USER = "00000000-0000-4000-8000-000000000001"
# The browser demo page's bundle in this checkout (`make npm-projects` builds it); served at /demo.
DEMO_BUNDLE = Path(__file__).resolve().parents[2] / "web" / "dist"


class _Stop(Exception):
    pass


def _raise_stop(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


def _stop_on_signals() -> None:
    """Explicit handlers: a shell that starts a job in the background (`make dev &`, a script, CI) starts it
    with SIGINT ignored, and Python then never installs its own Ctrl-C handler."""
    signal.signal(signal.SIGINT, _raise_stop)
    signal.signal(signal.SIGTERM, _raise_stop)


def run_dev(port: int) -> int:
    if not port_is_free(port):
        click.echo(
            f"broker dev: port {port} on {LOOPBACK} is already in use (another stack?); "
            "stop it or pick another with --port",
            err=True,
        )
        return 2
    _stop_on_signals()
    settings = get_settings()
    children: list[ManagedProcess] = []
    dev_env: Path | None = None
    try:
        redis_url = settings.redis_url
        if not redis_answers(redis_url):
            redis_url, redis_process = start_redis(LOGS)
            children.append(redis_process)
        local = start_local_s3(LOGS)
        children.extend(local.processes)
        for bucket in dict.fromkeys(filter(None, (settings.s3_bucket, settings.s3_public_bucket))):
            create_bucket(local, bucket)
        topic_arn = create_topic(local, settings.s3_bucket)
        database_url = (
            settings.database_url
            if user_set(settings, "database_url")
            else f"sqlite:///{(VAR / 'broker.db').resolve()}"
        )
        upgrade(database_url)
        env = stack_env(settings, local, topic_arn, redis_url, database_url)
        if not user_set(settings, "demo_dir"):
            env["BROKER_DEMO_DIR"] = str(DEMO_BUNDLE)
        api_url = f"http://{LOOPBACK}:{port}"
        api = ManagedProcess(
            "api", python_module("app.cli", "serve", "--host", LOOPBACK, "--port", str(port)), LOGS, env
        )
        children.append(api)
        api.wait_http(f"{api_url}/healthz")
        wire_notifications(local, settings.s3_bucket, topic_arn, f"{api_url}/v1/events/s3")
        children.append(ManagedProcess("worker", python_module("app.cli", "worker"), LOGS, env))
        children.append(ManagedProcess("scheduler", python_module("app.cli", "scheduler"), LOGS, env))
        # Not a setting of the service: where `broker upload` in a second shell finds this stack's API.
        dev_env = write_dev_env({**env, "BROKER_API_URL": api_url})
        jwt_secret = effective_env(env).get("BROKER_JWT_SECRET")
        _banner(api_url, mint_token(jwt_secret, DEV_USER) if jwt_secret else None, local.s3_url, dev_env)
        return _supervise(children)
    except (KeyboardInterrupt, _Stop):
        click.echo("\nstopping…")
        return 0
    finally:
        # A second Ctrl-C while stopping must not leave half the stack running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in reversed(children):
            child.stop()
        if dev_env is not None:
            dev_env.unlink(missing_ok=True)


def _supervise(children: list[ManagedProcess]) -> int:
    while True:
        for child in children:
            if not child.alive():
                click.echo(
                    f"{child.name} exited; its log ({child.log_path}) ends with:\n{child.tail()}", err=True
                )
                return 1
        time.sleep(0.5)


def _banner(api_url: str, token: str | None, s3_url: str, dev_env: Path) -> None:
    # The token rides in the fragment: the browser keeps it, no server or log ever sees it.
    demo = f"{api_url}/demo/#token={token}" if token else f"{api_url}/demo/ (paste your token)"
    token = token or "(none: BROKER_JWT_JWKS_URL is set, use your issuer's tokens)"
    click.echo(
        f"""
upload-broker is running (logs in {LOGS}/)
  API        {api_url}
  local S3   {s3_url}
  dev token  {token}
  demo page  {demo}
  settings   {dev_env}  (another shell: set -a; . {dev_env}; set +a; then any broker command)

Try it:  export TOKEN={token}
         curl -s -X POST {api_url}/v1/uploads -H "Authorization: Bearer $TOKEN" \\
              -H 'Content-Type: application/json' \\
              -d '{{"kind": "avatar", "content_type": "image/jpeg", "size": 123456}}'
    or:  set -a; . {dev_env}; set +a; broker upload photo.jpg --kind avatar
Ctrl-C stops everything.
"""
    )
