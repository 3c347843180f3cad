"""`broker dev`: the whole service on one machine, with nothing but this checkout.

One supervisor process starts, in order: Redis (the configured one if it answers, in a database no other dev
stack holds; else a private one), the local S3 + SNS (moto, which makes its buckets, topic and wiring itself
whenever it starts, behind the POST-policy gate), the database schema (SQLite under ./var), the API, a worker
and the scheduler of the lifecycle sweeps. A child that exits is started again (`app.devstack.supervisor`);
only Ctrl-C or SIGTERM stops the stack, in reverse order, work horses included.
"""

from __future__ import annotations

import contextlib
import signal
import time
from collections.abc import Iterator
from pathlib import Path
from types import FrameType
from urllib.parse import urlsplit

import click
from redis import Redis
from redis.exceptions import RedisError
from rq import Worker

from app.auth import mint_token
from app.config import Settings, get_settings
from app.devstack.dev_env import (
    DEV_ENV,
    DEV_USER,
    DEV_USER_VARIABLE,
    dev_env_command,
    dev_user,
    effective_env,
    stack_env,
    user_set,
    write_dev_env,
)
from app.devstack.local_s3 import PROVISIONED_PATH, create_topic, start_local_s3
from app.devstack.processes import (
    LOOPBACK,
    ManagedProcess,
    http_answers,
    port_answers,
    port_is_free,
    python_module,
)
from app.devstack.provision import Wiring
from app.devstack.redis_db import Claim, LeaseKeeper, claim_database
from app.devstack.redis_server import redis_answers, start_redis
from app.devstack.supervisor import POLL_SECONDS, Supervised, Supervisor
from app.migrate import upgrade

__all__ = ["DEV_USER", "run_dev"]

VAR = Path("var")
LOGS = VAR / "log"
# The browser demo page's bundle in this checkout (`make npm-projects` builds it); served at /demo.
DEMO_BUNDLE = Path(__file__).resolve().parents[2] / "web" / "dist"


class _Stop(Exception):
    pass


class _Signals:
    """SIGINT/SIGTERM stop the stack by raising `_Stop` wherever the supervisor is, except while it starts a
    child again: there the stop waits until the child is recorded (so it is stopped too), then is raised."""

    def __init__(self) -> None:
        self.deferring = False
        self.pending = False

    def install(self) -> None:
        """Explicit handlers: a shell that starts a job in the background (`make dev &`, a script, CI) starts
        it with SIGINT ignored, and Python then never installs its own Ctrl-C handler."""
        signal.signal(signal.SIGINT, self._handle)
        signal.signal(signal.SIGTERM, self._handle)

    def _handle(self, _signum: int, _frame: FrameType | None) -> None:
        if self.deferring:
            self.pending = True
            return
        raise _Stop

    @contextlib.contextmanager
    def deferred(self) -> Iterator[None]:
        self.deferring = True
        try:
            yield
        finally:
            self.deferring = False
        if self.pending:
            raise _Stop


def run_dev(port: int) -> int:
    if not port_is_free(port):
        click.echo(
            f"broker dev: port {port} on {LOOPBACK} is already in use (another stack?); "
            "stop it or pick another with --port",
            err=True,
        )
        return 2
    refusal = _refusal()
    if refusal:
        click.echo(f"broker dev: {refusal}", err=True)
        return 2
    signals = _Signals()
    signals.install()
    settings = get_settings()
    processes: list[ManagedProcess] = []
    lease: LeaseKeeper | None = None
    dev_env: Path | None = None
    try:
        claim = _redis(settings, port, processes)
        lease = LeaseKeeper(claim, _owner(port), _say)
        api_url = f"http://{LOOPBACK}:{port}"
        buckets = tuple(dict.fromkeys(filter(None, (settings.s3_bucket, settings.s3_public_bucket))))
        wiring = Wiring(buckets, settings.s3_bucket, f"{api_url}/v1/events/s3")
        local = start_local_s3(LOGS, provision=wiring.to_json())
        processes.extend(local.processes)
        topic_arn = create_topic(local, settings.s3_bucket)  # made by moto already: this only reads its ARN
        database_url = (
            settings.database_url
            if user_set(settings, "database_url")
            else f"sqlite:///{(VAR / 'broker.db').resolve()}"
        )
        upgrade(database_url)
        env = stack_env(settings, local, topic_arn, claim.url, database_url)
        env[DEV_USER_VARIABLE] = dev_user()
        if not user_set(settings, "demo_dir"):
            env["BROKER_DEMO_DIR"] = str(DEMO_BUNDLE)
        api = ManagedProcess(
            "api", python_module("app.cli", "serve", "--host", LOOPBACK, "--port", str(port)), LOGS, env
        )
        processes.append(api)
        api.wait_http(f"{api_url}/healthz")
        processes.append(ManagedProcess("worker", python_module("app.cli", "worker"), LOGS, env))
        processes.append(ManagedProcess("scheduler", python_module("app.cli", "scheduler"), LOGS, env))
        # Not a setting of the service: where `broker upload` in a second shell finds this stack's API.
        dev_env = write_dev_env({**env, "BROKER_API_URL": api_url})
        lease.start()
        jwt_secret = effective_env(env).get("BROKER_JWT_SECRET")
        token = mint_token(jwt_secret, env[DEV_USER_VARIABLE]) if jwt_secret else None
        _banner(api_url, token, local.s3_url, claim, dev_env)
        probes = {
            "redis": lambda _: port_answers(LOOPBACK, _port_of(claim.url)),
            "moto": lambda _: http_answers(f"{local.moto_url}{PROVISIONED_PATH}", ok_only=True),
            "s3-gate": lambda _: http_answers(local.s3_url),
            "api": lambda _: http_answers(f"{api_url}/healthz"),
            "worker": lambda child: _registered(claim.url, child),
        }
        supervisor = Supervisor([Supervised(child, probes.get(child.name)) for child in processes], _say)
        while True:
            with signals.deferred():
                supervisor.step()
            time.sleep(POLL_SECONDS)
    except (KeyboardInterrupt, _Stop):
        click.echo("\nstopping…")
        return 0
    except RuntimeError as error:  # a part of the stack that cannot start says why (and its log's end)
        click.echo(f"broker dev: {error}", err=True)
        return 1
    finally:
        # A second Ctrl-C while stopping must not leave half the stack running.
        signal.signal(signal.SIGINT, signal.SIG_IGN)
        signal.signal(signal.SIGTERM, signal.SIG_IGN)
        for child in reversed(processes):
            child.stop()
        if lease is not None:
            lease.stop()
        if dev_env is not None:
            dev_env.unlink(missing_ok=True)


def _refusal() -> str | None:
    """Why this stack must not start here, before anything starts: another stack runs from this directory
    (var/ holds one stack's settings, database and logs), or the dev user is not a UUID."""
    try:
        dev_user()
    except click.UsageError as error:
        return error.format_message()
    if DEV_ENV.exists():
        for line in DEV_ENV.read_text(errors="replace").splitlines():
            if line.startswith("BROKER_API_URL="):
                api_url = line.split("=", 1)[1].strip("'")
                if http_answers(f"{api_url}/healthz"):
                    return (
                        f"another broker dev runs from this directory (its API: {api_url}); run a second "
                        "stack from another directory (each directory's var/ holds one stack)"
                    )
    return None


def _owner(port: int) -> str:
    return f"{Path.cwd().resolve()} port {port}"


def _redis(settings: Settings, port: int, processes: list[ManagedProcess]) -> Claim:
    """The configured Redis in a database of this stack's own, else a private redis-server."""
    if redis_answers(settings.redis_url):
        return claim_database(settings.redis_url, _owner(port), user_set(settings, "redis_url"))
    url, process = start_redis(LOGS)
    processes.append(process)
    return Claim(url, held=False)


def _port_of(url: str) -> int:
    return urlsplit(url).port or 6379


def _registered(redis_url: str, child: ManagedProcess) -> bool:
    """Whether the worker `child` runs has registered itself with RQ (it is back at work)."""
    try:
        redis = Redis.from_url(redis_url, socket_connect_timeout=1, socket_timeout=1)
        return any(worker.pid == child.process.pid for worker in Worker.all(connection=redis))
    except RedisError:
        return False


def _say(line: str) -> None:
    click.echo(f"broker dev: {line}", err=True)


def _banner(api_url: str, token: str | None, s3_url: str, claim: Claim, dev_env: Path) -> None:
    # The token rides in the fragment: the browser keeps it, no server or log ever sees it.
    demo = f"{api_url}/demo/#token={token}" if token else f"{api_url}/demo/ (paste your token)"
    token = token or "(none: BROKER_JWT_JWKS_URL is set, use your issuer's tokens)"
    broker = dev_env_command()
    redis = f"{claim.url} {claim.note()}".rstrip()
    click.echo(
        f"""
upload-broker is running (logs in {LOGS}/; a process that exits is started again)
  API        {api_url}
  local S3   {s3_url}
  Redis      {redis}
  dev token  {token}
  demo page  {demo}
  settings   {dev_env}  (another shell: set -a; . {dev_env}; set +a; then any {broker} command;
             `{broker} token` makes a token for the dev user)

Try it:  export TOKEN={token}
         curl -s -X POST {api_url}/v1/uploads -H "Authorization: Bearer $TOKEN" \\
              -H 'Content-Type: application/json' \\
              -d '{{"kind": "avatar", "content_type": "image/jpeg", "size": 123456}}'
    or:  set -a; . {dev_env}; set +a; {broker} upload photo.jpg --kind avatar
A second stack: another directory and --port; it gets a Redis database of its own.
Ctrl-C stops everything.
"""
    )
