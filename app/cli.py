"""`broker …`: the service's command line (run, operate, develop)."""

from __future__ import annotations

import sys
import uuid
from datetime import timedelta

import click

from app.cli_lifecycle import register_lifecycle_commands
from app.cli_ops import register_ops_commands
from app.config import get_settings
from app.logging_setup import configure_logging


@click.group()
def main() -> None:
    """upload-broker: direct-to-S3 uploads for the fitness app."""


@main.command()
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--workers", default=2, show_default=True, type=int, help="gunicorn worker processes")
def serve(host: str, port: int, workers: int) -> None:
    """Serve the HTTP API with gunicorn."""
    from app.server import run_gunicorn

    run_gunicorn(host, port, workers)


@main.command()
@click.option("--burst", is_flag=True, help="drain the queue, then exit")
@click.option(
    "--with-scheduler/--without-scheduler",
    default=True,
    show_default=True,
    help="also move delayed retries back onto the queue when due",
)
def worker(burst: bool, with_scheduler: bool) -> None:
    """Run an RQ worker for the upload queue."""
    from rq import Worker

    from app.services import Services
    from workers.jobs import use_services

    configure_logging()
    services = Services(get_settings())
    # Built once here, before RQ forks a work horse per job, so jobs don't rebuild the S3 client and the
    # engine every time. Both are fork-safe at this point: neither has opened a connection yet.
    services.storage, services.db  # noqa: B018 - evaluating the cached properties is the point
    use_services(services)
    rq_worker = Worker([services.queue], connection=services.redis)
    rq_worker.work(burst=burst, with_scheduler=with_scheduler)


@main.command()
@click.option("--user", "user_id", default=None, help="user UUID (default: a new one)")
@click.option("--role", "roles", multiple=True, help="e.g. staff; repeatable")
@click.option("--hours", default=12, show_default=True, type=int)
def token(user_id: str | None, roles: tuple[str, ...], hours: int) -> None:
    """Mint a bearer token signed with BROKER_JWT_SECRET (or the local dev secret)."""
    from app.auth import mint_token
    from app.devstack.secrets import dev_secrets

    secret = get_settings().jwt_secret or dev_secrets().jwt_secret
    user = str(uuid.UUID(user_id)) if user_id else str(uuid.uuid4())
    click.echo(mint_token(secret, user, list(roles), timedelta(hours=hours)))


@main.group()
def db() -> None:
    """Database schema."""


@db.command("upgrade")
@click.option("--revision", default="head", show_default=True)
def db_upgrade(revision: str) -> None:
    """Apply migrations up to REVISION."""
    from app.migrate import upgrade

    upgrade(get_settings().database_url, revision)
    click.echo(f"database at {revision}")


@main.command()
@click.option("--port", default=8000, show_default=True, type=int, help="API port on 127.0.0.1")
def dev(port: int) -> None:
    """The whole service on this machine: API, worker, local S3 + SNS, SQLite, Redis."""
    from app.devstack.dev import run_dev

    sys.exit(run_dev(port))


# Operations commands live beside the code they drive.
register_ops_commands(main)
register_lifecycle_commands(main)

if __name__ == "__main__":
    main()
