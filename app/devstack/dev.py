"""`broker dev`: the whole service on one machine, with nothing but this checkout.

One supervisor process starts, in order: Redis (the configured one if it answers, else a private one), the
local S3 + SNS (moto behind the POST-policy gate), the database schema (SQLite under ./var), the API, the
S3 → SNS → webhook wiring, a worker, and the scheduler of the lifecycle sweeps. Ctrl-C stops them in
reverse order.
"""

from __future__ import annotations

import os
import signal
import time
from pathlib import Path
from types import FrameType

import click

from app.auth import mint_token
from app.config import get_settings
from app.devstack.local_s3 import (
    create_bucket,
    create_topic,
    local_credentials_env,
    start_local_s3,
    wire_notifications,
)
from app.devstack.processes import LOOPBACK, ManagedProcess, python_module
from app.devstack.redis_server import redis_answers, start_redis
from app.devstack.secrets import dev_secrets
from app.migrate import upgrade

VAR = Path("var")
LOGS = VAR / "log"
DEV_USER = "00000000-0000-4000-8000-000000000001"


class _Stop(Exception):
    pass


def _raise_stop(_signum: int, _frame: FrameType | None) -> None:
    raise _Stop


def run_dev(port: int) -> int:
    settings = get_settings()
    secrets = dev_secrets()
    children: list[ManagedProcess] = []
    signal.signal(signal.SIGTERM, _raise_stop)
    try:
        redis_url = settings.redis_url
        if not redis_answers(redis_url):
            redis_url, redis_process = start_redis(LOGS)
            children.append(redis_process)
        local = start_local_s3(LOGS)
        children.extend(local.processes)
        create_bucket(local, settings.s3_bucket)
        topic_arn = create_topic(local, settings.s3_bucket)
        database_url = os.environ.get("BROKER_DATABASE_URL", f"sqlite:///{(VAR / 'broker.db').resolve()}")
        upgrade(database_url)
        env = {
            **local_credentials_env(),
            "BROKER_DATABASE_URL": database_url,
            "BROKER_REDIS_URL": redis_url,
            "BROKER_S3_ENDPOINT_URL": local.s3_url,
            "BROKER_S3_BUCKET": settings.s3_bucket,
            "BROKER_S3_REGION": "us-east-1",
            "BROKER_SNS_TOPIC_ARN": topic_arn,
            "BROKER_SNS_CERT_ENDPOINT_URL": local.moto_url,
            "BROKER_JWT_SECRET": secrets.jwt_secret,
            "BROKER_WEBHOOK_TOKEN": secrets.webhook_token,
        }
        api_url = f"http://{LOOPBACK}:{port}"
        api = ManagedProcess("api", python_module("app.cli", "serve", "--port", str(port)), LOGS, env)
        children.append(api)
        api.wait_http(f"{api_url}/healthz")
        wire_notifications(local, settings.s3_bucket, topic_arn, f"{api_url}/v1/events/s3")
        children.append(ManagedProcess("worker", python_module("app.cli", "worker"), LOGS, env))
        children.append(ManagedProcess("scheduler", python_module("app.cli", "scheduler"), LOGS, env))
        _banner(api_url, mint_token(secrets.jwt_secret, DEV_USER), local.s3_url)
        return _supervise(children)
    except (KeyboardInterrupt, _Stop):
        click.echo("\nstopping…")
        return 0
    finally:
        for child in reversed(children):
            child.stop()


def _supervise(children: list[ManagedProcess]) -> int:
    while True:
        for child in children:
            if not child.alive():
                click.echo(
                    f"{child.name} exited; its log ({child.log_path}) ends with:\n{child.tail()}", err=True
                )
                return 1
        time.sleep(0.5)


def _banner(api_url: str, token: str, s3_url: str) -> None:
    click.echo(
        f"""
upload-broker is running (logs in {LOGS}/)
  API        {api_url}
  local S3   {s3_url}
  dev token  {token}

Try it:  export TOKEN={token}
         curl -s -X POST {api_url}/v1/uploads -H "Authorization: Bearer $TOKEN" \\
              -H 'Content-Type: application/json' \\
              -d '{{"kind": "avatar", "content_type": "image/jpeg", "size": 123456}}'
Ctrl-C stops everything.
"""
    )
