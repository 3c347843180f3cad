"""`broker …`: the service's command line (run, operate, develop)."""

from __future__ import annotations

import sys
import uuid
from datetime import timedelta

import click
from pydantic import ValidationError

from app.cli_lifecycle import register_lifecycle_commands
from app.cli_ops import register_ops_commands
from app.cli_upload import register_upload_commands
from app.config import get_settings, settings_error_line
from app.logging_setup import configure_logging


@click.group()
def main() -> None:
    """upload-broker: direct-to-S3 uploads for the fitness app."""
    # Every command validates the settings before it binds, connects or forks anything: a bad setting is
    # one line on stderr and exit status 2, not a traceback from each process that reads it later.
    try:
        get_settings()
    except ValidationError as error:
        click.echo(f"broker: invalid settings: {settings_error_line(error)}", err=True)
        sys.exit(2)


@main.command()
@click.option(
    "--server",
    type=click.Choice(["waitress", "gunicorn"]),
    default="waitress",
    show_default=True,
    envvar="BROKER_HTTP_SERVER",
    help="waitress buffers whole requests (slow clients cannot hold threads); gunicorn only behind a "
    "buffering proxy",
)
@click.option("--host", default=None, help="[default: 127.0.0.1]")
@click.option("--port", default=None, type=int, help="[default: 8000]")
@click.option("--workers", default=None, type=int, help="server processes [default: 2]")
@click.option(
    "--config",
    "config_file",
    default=None,
    type=click.Path(exists=True, dir_okay=False),
    help="gunicorn only: a gunicorn config file (else $GUNICORN_CONFIG); GUNICORN_CMD_ARGS is honoured too",
)
def serve(
    server: str, host: str | None, port: int | None, workers: int | None, config_file: str | None
) -> None:
    """Serve the HTTP API (gunicorn: defaults < config file < GUNICORN_CMD_ARGS < these options)."""
    if server == "waitress":
        from app.server_waitress import run_waitress

        run_waitress(host or "127.0.0.1", port or 8000, workers or 2)
        return
    from app.server import run_gunicorn

    run_gunicorn(host, port, workers, config_file)


@main.command()
@click.option("--burst", is_flag=True, help="drain the queues, then exit")
@click.option(
    "--queue",
    "queue_names",
    multiple=True,
    metavar="NAME",
    help="listen to this queue (repeatable, in priority order); default: every processing queue",
)
@click.option(
    "--with-scheduler/--without-scheduler",
    default=True,
    show_default=True,
    help="also move delayed retries back onto the queue when due",
)
def worker(burst: bool, queue_names: tuple[str, ...], with_scheduler: bool) -> None:
    """Run an RQ worker for the processing queues (images, documents, videos)."""
    from rq import Queue

    import workers.jobs  # noqa: F401 - imported once here, not on the first job
    from app.services import Services
    from workers.context import use_services
    from workers.lifecycle import JOB_HEARTBEAT_SECONDS
    from workers.sandbox_host import stop_hosts
    from workers.worker import InProcessWorker, work_through_outages

    configure_logging()
    services = Services(get_settings())
    use_services(services)
    # Jobs run in this process (`workers.worker`): its S3 client, database pool and Redis connection serve
    # every job. A short job heartbeat, so a job whose worker is killed is known abandoned within a minute
    # and re-run by the recover sweep (`workers.lifecycle.JOB_HEARTBEAT_SECONDS`).
    queues = [Queue(name, connection=services.redis) for name in queue_names] or services.processing_queues

    def make_worker(name: str | None) -> InProcessWorker:
        return InProcessWorker(
            queues, name=name, connection=services.redis, job_monitoring_interval=JOB_HEARTBEAT_SECONDS
        )

    try:
        work_through_outages(make_worker, burst, with_scheduler)
    finally:
        stop_hosts()  # they would die with this process anyway; stopped here, they are reaped and counted


@main.command()
@click.option(
    "--user",
    "user_id",
    default=None,
    type=click.UUID,
    envvar="BROKER_DEV_USER",
    help="user UUID [default: $BROKER_DEV_USER (var/dev.env: the dev user of the banner's token), else a new one]",
)
@click.option("--role", "roles", multiple=True, help="e.g. staff; repeatable")
@click.option("--hours", default=12, show_default=True, type=int)
def token(user_id: uuid.UUID | None, roles: tuple[str, ...], hours: int) -> None:
    """Mint a bearer token signed with BROKER_JWT_SECRET (or the local dev secret)."""
    from app.auth import mint_token
    from app.devstack.secrets import dev_secrets

    secret = get_settings().jwt_secret or dev_secrets().jwt_secret
    user = str(user_id or uuid.uuid4())  # an explicit --user wins over $BROKER_DEV_USER
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
register_upload_commands(main)

if __name__ == "__main__":
    main()
