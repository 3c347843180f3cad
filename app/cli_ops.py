"""`broker queues`, `broker failed …`: inspecting and repairing the job queues.

The commands only render: what they show and do is `app.ops`. Every command takes `--json` for scripts
(stdout then holds exactly one JSON document; prompts go to stderr).
"""

from __future__ import annotations

import dataclasses
import functools
import json
import os
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any, ParamSpec, TypeVar

import click
from redis.exceptions import RedisError
from rich.console import Console
from rich.table import Table

from app import ops
from app.config import get_settings
from app.services import Services

P = ParamSpec("P")
R = TypeVar("R")

json_option = click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
queue_option = click.option(
    "--queue", "only", multiple=True, help="Only this queue (repeatable). Default: every queue."
)


def register_ops_commands(main: click.Group) -> None:
    """Attach the ops commands to the `broker` group."""
    main.add_command(queues)
    main.add_command(failed)


def _redis_errors(command: Callable[P, R]) -> Callable[P, R]:
    """An unreachable Redis is an operator-facing message and exit status 1, not a traceback."""

    @functools.wraps(command)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        try:
            return command(*args, **kwargs)
        except RedisError as error:
            raise click.ClickException(f"Redis ({get_settings().redis_url}) unavailable: {error}") from None

    return wrapper


@click.command()
@queue_option
@json_option
@_redis_errors
def queues(only: tuple[str, ...], as_json: bool) -> None:
    """Depth of each queue (queued, started, abandoned, failed, scheduled, deferred) and what each worker runs."""
    report = ops.queues_report(_services(), only)
    if as_json:
        _print_json(report)
        return
    table = Table(title="queues", title_justify="left")
    table.add_column("queue")
    table.add_column("processing")
    for state in ops.QUEUE_STATES:
        table.add_column(state, justify="right")
    table.add_column("job timeout", justify="right")
    for depths in report.queues:
        timeout = f"{depths.job_timeout_seconds} s" if depths.job_timeout_seconds else "-"
        counts = (str(count) for count in depths.by_state().values())
        table.add_row(depths.queue, depths.processing or "-", *counts, timeout)
    console = _console()
    console.print(table)
    for job in report.abandoned:
        console.print(
            f"abandoned: {job.job_id} (upload {job.upload_id or '-'}) on {job.queue}: worker {job.worker} "
            f"dead since {_when(job.last_heartbeat)}; the recover sweep re-runs it"
        )
    if not report.workers:
        console.print("workers: none registered")
        return
    workers = Table(title="workers", title_justify="left")
    for column in ("worker", "state", "queues", "host / pid", "running", "last heartbeat"):
        workers.add_column(column)
    for worker in report.workers:
        running = worker.current_job_id or "-"
        if worker.current_upload_id:
            running += f" (upload {worker.current_upload_id})"
        workers.add_row(
            worker.name,
            worker.state,
            ",".join(worker.queues),
            f"{worker.hostname or '?'} / {worker.pid or '?'}",
            running,
            _when(worker.last_heartbeat),
        )
    console.print(workers)


@click.group()
def failed() -> None:
    """Jobs that ran out of retries: list, retry, purge."""


@failed.command("list")
@queue_option
@json_option
@_redis_errors
def failed_list(only: tuple[str, ...], as_json: bool) -> None:
    """Failed jobs, newest first: job id, upload id, when it failed and why."""
    jobs = ops.failed_jobs(_services(), only)
    if as_json:
        _print_json(jobs)
        return
    console = _console()
    if not jobs:
        console.print("no failed jobs")
        return
    table = Table(title=f"failed jobs ({len(jobs)})", title_justify="left")
    for column in ("job id", "upload id", "queue", "failed at", "error"):
        table.add_column(column)
    for job in jobs:
        table.add_row(job.job_id, job.upload_id or "-", job.queue, _when(job.failed_at), job.error)
    console.print(table)


@failed.command("retry")
@click.argument("job_ids", nargs=-1)
@click.option("--all", "retry_all", is_flag=True, help="Retry every failed job (of --queue, if given).")
@queue_option
@json_option
@_redis_errors
def failed_retry(job_ids: tuple[str, ...], retry_all: bool, only: tuple[str, ...], as_json: bool) -> None:
    """Put failed jobs back on their queue (one more attempt each); exit 1 if an id was not a failed job."""
    if bool(job_ids) == retry_all:
        raise click.UsageError("give job ids, or --all")
    if job_ids and only:
        raise click.UsageError("--queue only applies to --all; a job id names its queue")
    outcome = ops.retry_failed(_services(), job_ids, only)
    if as_json:
        _print_json(outcome)
    else:
        console = _console()
        console.print(f"re-queued {len(outcome.retried)} job(s)")
        for job_id in outcome.retried:
            console.print(f"  {job_id}")
        if outcome.not_failed:
            console.print(
                f"not failed jobs (unknown, or not in a failed list): {', '.join(outcome.not_failed)}"
            )
    if outcome.not_failed:
        raise SystemExit(1)


@failed.command("purge")
@queue_option
@click.option("--yes", is_flag=True, help="Do not ask for confirmation.")
@json_option
@_redis_errors
def failed_purge(only: tuple[str, ...], yes: bool, as_json: bool) -> None:
    """Delete failed jobs for good. Their uploads stay `failed`; only the jobs (and their errors) go."""
    services = _services()
    jobs = ops.failed_jobs(services, only)
    if jobs and not yes:
        click.confirm(
            f"Delete {len(jobs)} failed job(s) from {', '.join(sorted({job.queue for job in jobs}))}?",
            abort=True,
            err=True,
        )
    # Only the jobs the operator saw: a failure landing meanwhile is not deleted unseen.
    purged = ops.purge_failed(services, only, [job.job_id for job in jobs])
    if as_json:
        _print_json({"purged": purged})
    else:
        _console().print(f"purged {len(purged)} failed job(s)")


def _services() -> Services:
    return Services(get_settings())


def _console() -> Console:
    console = Console(highlight=False)
    if not console.is_terminal and "COLUMNS" not in os.environ:
        console.width = 200  # piped to a file or grep: do not cut job ids at 80 columns
    return console


def _when(moment: datetime | None) -> str:
    if moment is None:
        return "-"
    moment = moment.astimezone(UTC) if moment.tzinfo else moment.replace(tzinfo=UTC)
    seconds = max(0, int((datetime.now(UTC) - moment).total_seconds()))
    ago = f"{seconds}s" if seconds < 120 else f"{seconds // 60}m" if seconds < 7200 else f"{seconds // 3600}h"
    return f"{moment:%Y-%m-%d %H:%M:%S}Z ({ago} ago)"


def _print_json(data: Any) -> None:
    if dataclasses.is_dataclass(data) and not isinstance(data, type):
        data = dataclasses.asdict(data)
    elif isinstance(data, list):
        data = [dataclasses.asdict(item) for item in data]
    click.echo(json.dumps(data, default=_json_default, indent=2))


def _json_default(value: object) -> str:
    if isinstance(value, datetime):
        return value.isoformat()
    raise TypeError(f"{type(value).__name__} is not JSON serializable")
