"""What the local stack runs with, and `var/dev.env`, which lets a second shell talk to the same stack.

Settings the user put in the environment always win: generated local secrets and the stack's defaults only
fill what is unset. Only the wiring that *is* the local stack (S3 endpoints, SNS topic, region, credentials)
is the stack's own: pointing `broker dev` at another store would leave nothing to notify the webhook.
"""

from __future__ import annotations

import os
import shlex
import uuid
from pathlib import Path

import click

from app.broker_command import broker_command, broker_script
from app.config import Settings
from app.devstack.local_s3 import LocalS3, local_credentials_env
from app.devstack.secrets import dev_secrets

DEV_ENV = Path("var/dev.env")
# The user the banner's token is for; `broker token` and `broker upload` default to it where var/dev.env is
# loaded. A UUID the user exports as BROKER_DEV_USER wins.
DEV_USER = "00000000-0000-4000-8000-000000000001"
DEV_USER_VARIABLE = "BROKER_DEV_USER"


def dev_user() -> str:
    """The dev stack's user: $BROKER_DEV_USER (a UUID, else a usage error), else the fixed dev user."""
    value = os.environ.get(DEV_USER_VARIABLE) or DEV_USER
    try:
        return str(uuid.UUID(value))
    except ValueError:
        raise click.UsageError(f"{DEV_USER_VARIABLE}={value!r} is not a UUID") from None


def user_set(settings: Settings, name: str) -> bool:
    """Whether BROKER_<NAME> came from the user (environment or .env), not from the code's default."""
    return name in settings.model_fields_set


def secrets_env(settings: Settings) -> dict[str, str]:
    """The signing secret and webhook token: the user's, else this checkout's generated ones."""
    env: dict[str, str] = {}
    if not (settings.jwt_secret or settings.jwt_jwks_url):
        env["BROKER_JWT_SECRET"] = dev_secrets().jwt_secret
    if not settings.webhook_token:
        env["BROKER_WEBHOOK_TOKEN"] = dev_secrets().webhook_token
    return env


def stack_env(
    settings: Settings, local: LocalS3, topic_arn: str, redis_url: str, database_url: str
) -> dict[str, str]:
    """Every child's environment on top of the user's: the local wiring plus what the user left unset."""
    return {
        **local_credentials_env(),
        "BROKER_DATABASE_URL": database_url,
        "BROKER_REDIS_URL": redis_url,
        "BROKER_S3_ENDPOINT_URL": local.s3_url,
        # The broker's own requests skip the gate, which checks only what clients send (as S3 does).
        "BROKER_S3_INTERNAL_ENDPOINT_URL": local.moto_url,
        "BROKER_S3_BUCKET": settings.s3_bucket,
        "BROKER_S3_REGION": "us-east-1",
        "BROKER_SNS_TOPIC_ARN": topic_arn,
        "BROKER_SNS_CERT_ENDPOINT_URL": local.moto_url,
        **secrets_env(settings),
    }


def effective_env(env: dict[str, str]) -> dict[str, str]:
    """The user's BROKER_* settings with the stack's on top: what the children really run with."""
    users = {name: value for name, value in os.environ.items() if name.startswith("BROKER_")}
    return dict(sorted({**users, **env}.items()))


def write_dev_env(env: dict[str, str], path: Path = DEV_ENV) -> Path:
    """`set -a; . var/dev.env; set +a` in another shell, and every `broker` command there uses this stack
    (never a real AWS bucket: the S3 endpoint and the local credentials come with it). Owner-only: it
    holds the secrets."""
    path.parent.mkdir(parents=True, exist_ok=True)
    lines = ["# written by `broker dev` while it runs; load with: set -a; . var/dev.env; set +a"]
    lines += [f"{name}={shlex.quote(value)}" for name, value in effective_env(env).items()]
    script = broker_script()
    if script is not None:  # this stack's `broker` first on PATH, so the banner's hints work as printed
        lines.append(f'PATH={shlex.quote(str(script.parent))}:"$PATH"')
    descriptor = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(descriptor, "w") as file:
        file.write("\n".join(lines) + "\n")
    path.chmod(0o600)
    return path


def dev_env_command() -> str:
    """How a shell that loaded var/dev.env runs `broker`: by name when the file puts this one on PATH."""
    return "broker" if broker_script() is not None else broker_command()
