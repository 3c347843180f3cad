"""`broker cleanup-temp`, `broker reconcile`, `broker scheduler`: the lifecycle sweeps, on demand or on schedule.

The commands call the very functions the scheduled RQ jobs run (`workers.scheduled`), in this process: a
sweep run by hand behaves exactly like the scheduled one, including its lock. A summary goes to stdout
(`--json` for scripts), each action is also logged as a JSON line on stderr; the exit status is 1 when an
action failed (a delete S3 refused, a queue that was unavailable).
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable
from typing import Any

import click

DURATION = re.compile(r"^\s*(\d+)\s*([smhd]?)\s*$")
UNIT_SECONDS = {"": 1, "s": 1, "m": 60, "h": 3600, "d": 86400}


def parse_duration(text: str) -> int:
    """`24h`, `90m`, `3600s`, `2d` or a bare number of seconds → seconds."""
    match = DURATION.match(text.lower())
    if not match:
        raise ValueError(f"{text!r} is not a duration like 24h, 90m, 3600s or 2d")
    return int(match.group(1)) * UNIT_SECONDS[match.group(2)]


class Duration(click.ParamType):
    name = "duration"

    def convert(self, value: Any, param: click.Parameter | None, ctx: click.Context | None) -> int:
        if isinstance(value, int):
            return value
        try:
            return parse_duration(str(value))
        except ValueError as error:
            self.fail(str(error), param, ctx)


def format_report(report: dict[str, Any]) -> str:
    """The human summary: counts per stage, then one line per action."""
    if "skipped" in report:
        return f"{report['sweep']}: skipped ({report['skipped']})"
    title = f"{report['sweep']}{' (dry run)' if report['dry_run'] else ''}"
    settings = ", ".join(f"{name}={value}" for name, value in report["settings"].items())
    lines = [f"{title}: {settings}"]
    if not report["counts"]:
        lines.append("  nothing to do")
    for stage, counts in report["counts"].items():
        lines.append(f"  {stage:<16} " + ", ".join(f"{outcome} {n}" for outcome, n in sorted(counts.items())))
    for action in report["actions"]:
        detail = f"  error: {action['error']}" if "error" in action else ""
        upload = f"  upload {action['upload_id']}" if action["upload_id"] else ""
        lines.append(f"  - {action['outcome']:<14} {action['key']}{upload}{detail}")
    if report["errors"]:
        lines.append(f"{report['errors']} action(s) failed")
    return "\n".join(lines)


def _run(sweep: Callable[[], dict[str, Any]], as_json: bool) -> None:
    from redis.exceptions import RedisError

    from app.logging_setup import configure_logging

    configure_logging()
    try:
        report = sweep()
    except RedisError as error:  # the lock (and reconcile's queueing) need Redis
        raise click.ClickException(f"Redis is unavailable: {error}") from error
    click.echo(json.dumps(report, indent=2) if as_json else format_report(report))
    if report.get("errors"):
        raise SystemExit(1)


def register_lifecycle_commands(main: click.Group) -> None:
    """Attach the lifecycle commands to the `broker` group."""

    @main.command("cleanup-temp")
    @click.option(
        "--older-than",
        type=Duration(),
        default=None,
        help="age of temp objects to delete, e.g. 24h, 90m, 3600s [default: BROKER_TEMP_MAX_AGE_SECONDS]",
    )
    @click.option("--dry-run", is_flag=True, help="report what would be done, change nothing")
    @click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
    def cleanup_temp(older_than: int | None, dry_run: bool, as_json: bool) -> None:
        """Delete garbage temp/ objects and expire stale upload tickets."""
        from workers import scheduled

        _run(lambda: scheduled.cleanup_temp(older_than_seconds=older_than, dry_run=dry_run), as_json)

    @main.command("reconcile")
    @click.option("--dry-run", is_flag=True, help="report what would be queued, queue nothing")
    @click.option("--json", "as_json", is_flag=True, help="print the summary as JSON")
    def reconcile(dry_run: bool, as_json: bool) -> None:
        """Queue uploads whose S3 event was lost, and re-queue uploads whose job was lost."""
        from workers import scheduled

        _run(lambda: scheduled.reconcile(dry_run=dry_run), as_json)

    @main.command("scheduler")
    def scheduler() -> None:
        """Run RQ's cron scheduler, which queues the lifecycle sweeps for the workers (workers.scheduled.SWEEPS)."""
        from app.config import get_settings
        from app.logging_setup import configure_logging
        from workers.scheduled import run_scheduler

        configure_logging()
        run_scheduler(get_settings())
