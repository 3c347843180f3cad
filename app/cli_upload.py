"""`broker upload`: the reference client, following exactly the calls the mobile app makes (`app.client`).

This module only gathers the options, renders the outcome and chooses the exit status; the flow itself is
`app.client.flow`. Progress goes to stderr, the result to stdout (with `--json`, exactly one JSON document).
"""

from __future__ import annotations

import json
import mimetypes
import shlex
import uuid
from datetime import timedelta
from enum import IntEnum
from pathlib import Path
from typing import Any

import click

from app.auth import mint_token
from app.broker_command import broker_command
from app.cli_lifecycle import Duration
from app.client.api import ApiRefused, BrokerApi, TicketRequest, Unreachable
from app.client.flow import CannotResume, LocalFile, Options, Phase, Result, Uploader, WaitTimedOut
from app.client.parts import NotTheSameFile, RetryPolicy
from app.client.progress import byte_bar
from app.client.transfer import StoreRefused, TransferLost
from app.config import get_settings

DEFAULT_API = "http://127.0.0.1:8000"
DEV_TOKEN_TTL = timedelta(hours=1)


class Exit(IntEnum):
    READY = 0
    ERROR = 1  # the broker or the store refused; the file does not fit the upload being resumed
    USAGE = 2  # (click's own)
    REJECTED = 3  # the upload ended rejected or failed: its code and message are printed
    INTERRUPTED = 4  # the connection dropped and retries did not help: the printed command resumes
    TIMED_OUT = 5  # still being processed when --timeout ran out
    CTRL_C = 130


def register_upload_commands(main: click.Group) -> None:
    """Attach `broker upload` to the `broker` group."""
    main.add_command(upload)


@click.command()
@click.argument("file", type=click.Path(exists=True, dir_okay=False, readable=True, path_type=Path))
@click.option("--kind", help="media kind, e.g. avatar, workout_photo (not needed with --resume)")
@click.option("--context", "context_pairs", multiple=True, metavar="KEY=VALUE", help="e.g. workout_id=w1")
@click.option("--content-type", help="default: guessed from the file name")
@click.option("--resumable", is_flag=True, help="ask for a multipart upload even under the threshold")
@click.option("--resume", "resume_id", metavar="UPLOAD_ID", help="send the parts the store lacks")
@click.option("--parallel", default=4, show_default=True, type=click.IntRange(1, 16), help="parts at once")
@click.option("--retries", default=4, show_default=True, type=click.IntRange(0, 10), help="per part")
@click.option("--timeout", "wait_timeout", default="10m", show_default=True, type=Duration(), help="wait")
@click.option("--api", "api_url", envvar="BROKER_API_URL", default=DEFAULT_API, show_default=True)
@click.option("--token", envvar="BROKER_TOKEN", help="bearer token [env BROKER_TOKEN]")
@click.option(
    "--user",
    type=click.UUID,
    help="with BROKER_JWT_SECRET and no token: mint one for this user [default: $BROKER_DEV_USER, the dev user]",
)
@click.option("--json", "as_json", is_flag=True, help="print one JSON document")
@click.pass_context
def upload(
    ctx: click.Context,
    file: Path,
    kind: str | None,
    context_pairs: tuple[str, ...],
    content_type: str | None,
    resumable: bool,
    resume_id: str | None,
    parallel: int,
    retries: int,
    wait_timeout: int,
    api_url: str,
    token: str | None,
    user: uuid.UUID | None,
    as_json: bool,
) -> None:
    """Upload FILE as the mobile app does: ticket, POST or parts, complete, wait for the result."""
    if not (kind or resume_id):
        raise click.UsageError("give --kind (or --resume UPLOAD_ID)")
    local = LocalFile(file, content_type or _guess_type(file))
    options = Options(parallel, RetryPolicy(attempts=retries + 1), float(wait_timeout))
    uploader = Uploader(BrokerApi(api_url, _token(token, user)), options, byte_bar, _say)
    report = Report(uploader, as_json, _resume_hint(ctx, file, kind))
    try:
        if resume_id:
            result = uploader.resume(resume_id, local)
        else:
            ticket = TicketRequest(kind or "", local.content_type, local.size, file.name, resumable)
            result = uploader.start(file=local, ticket=_with_context(ticket, context_pairs))
    except KeyboardInterrupt:
        ctx.exit(report.interrupted(None))
    except TransferLost as lost:
        ctx.exit(report.interrupted(str(lost)))
    except ApiRefused as refused:
        ctx.exit(report.error(refused.code, refused.message))
    except StoreRefused as refused:
        ctx.exit(report.error(f"store_{refused.code}", refused.message))
    except Unreachable as error:
        ctx.exit(report.interrupted(f"the broker did not answer: {error}"))
    except (NotTheSameFile, CannotResume) as error:
        code = "not_the_same_file" if isinstance(error, NotTheSameFile) else "not_resumable"
        ctx.exit(report.error(code, str(error)))
    except WaitTimedOut as waited:
        ctx.exit(report.timed_out(waited, wait_timeout))
    ctx.exit(report.result(result))


def _say(line: str) -> None:
    click.echo(line, err=True)


def _with_context(ticket: TicketRequest, pairs: tuple[str, ...]) -> TicketRequest:
    context = {}
    for pair in pairs:
        name, sep, value = pair.partition("=")
        if not (sep and name):
            raise click.BadParameter(f"{pair!r} is not KEY=VALUE", param_hint="--context")
        context[name] = value
    return TicketRequest(**{**ticket.__dict__, "context": context})


def _guess_type(file: Path) -> str:
    guessed, _ = mimetypes.guess_type(file.name)
    if not guessed:
        raise click.UsageError(f"cannot tell the content type of {file.name}: give --content-type")
    return guessed


def _token(token: str | None, user: uuid.UUID | None) -> str:
    """The given token; else, where the signing secret is at hand (`var/dev.env`), a short dev token."""
    if token:
        if user:
            raise click.UsageError("--user only applies without a token (a dev token is minted for it)")
        return token
    secret = get_settings().jwt_secret
    if not secret:
        raise click.UsageError(
            "no token: give --token or set BROKER_TOKEN (next to `broker dev`: set -a; . var/dev.env; set +a)"
        )
    from app.devstack.dev_env import dev_user  # only when minting: the dev stack's wiring is not the client's

    return mint_token(secret, str(user or dev_user()), ttl=DEV_TOKEN_TTL)


def _resume_hint(ctx: click.Context, file: Path, kind: str | None) -> str:
    words = [broker_command(), "upload", shlex.quote(str(file))]
    words += ["--kind", kind] if kind else []
    if ctx.get_parameter_source("api_url") == click.core.ParameterSource.COMMANDLINE:
        words += ["--api", shlex.quote(ctx.params["api_url"])]
    return " ".join(words) + " --resume {upload_id}"


class Report:
    """What the command prints for each outcome, and the exit status that goes with it."""

    def __init__(self, uploader: Uploader, as_json: bool, resume_hint: str) -> None:
        self.state = uploader.state
        self.as_json = as_json
        self.resume_hint = resume_hint

    def result(self, result: Result) -> int:
        status = result.status
        if self.as_json:
            document = status.model_dump(mode="json", exclude_none=True)
            if result.media:
                document["link"] = result.media.model_dump(mode="json", exclude_none=True)
            self._json({**document, "transfer": self._transfer()})
        else:
            click.echo(_summary(result))
        return Exit.READY if status.status == "ready" else Exit.REJECTED

    def error(self, code: str, message: str) -> int:
        click.echo(f"{code}: {message}", err=True)
        if self.as_json:
            self._json({"upload_id": self.state.upload_id, "error": {"code": code, "message": message}})
        return Exit.ERROR

    def interrupted(self, reason: str | None) -> int:
        """One line: what happened, and the command that carries on (multipart), or that there is none."""
        state, upload_id = self.state, self.state.upload_id
        what = reason or "interrupted"
        resumable = upload_id is not None and (state.method == "MULTIPART" or state.phase == Phase.WAIT)
        if upload_id is None:
            line = f"{what}; nothing was uploaded"
        elif not resumable:
            line = f"{what}; upload {upload_id} was a single POST, which cannot be resumed: run the command again"
        elif state.phase == Phase.WAIT:
            line = f"{what}; upload {upload_id} is in the store and being processed; see its result with: "
            line += self.resume_hint.format(upload_id=upload_id)
        else:
            stored = len(state.parts_reused) + len(state.parts_sent)
            line = f"{what}; {stored} of {state.part_count} parts of upload {upload_id} are stored; resume with: "
            line += self.resume_hint.format(upload_id=upload_id)
        click.echo(line, err=True)
        if self.as_json:
            self._json(
                {
                    "upload_id": upload_id,
                    "status": "interrupted",
                    "message": line,
                    "transfer": self._transfer(),
                }
            )
        return Exit.CTRL_C if reason is None else Exit.INTERRUPTED

    def timed_out(self, waited: WaitTimedOut, seconds: int) -> int:
        status = waited.status.status if waited.status else "unknown"
        upload_id = self.state.upload_id
        later = self.resume_hint.format(upload_id=upload_id)
        self.error(
            "timed_out", f"upload {upload_id} is still {status} after {seconds} s; see it later with: {later}"
        )
        return Exit.TIMED_OUT

    def _transfer(self) -> dict[str, Any]:
        state = self.state
        return {
            "method": state.method,
            "part_count": state.part_count,
            "parts_sent": sorted(state.parts_sent),
            "parts_reused": state.parts_reused,
        }

    @staticmethod
    def _json(document: dict[str, Any]) -> None:
        click.echo(json.dumps(document, indent=2))


def _summary(result: Result) -> str:
    status = result.status
    head = f"{status.status}: {status.kind} {status.upload_id}"
    if status.error:
        return f"{head}\n  {status.error.code}: {status.error.message}"
    media = status.media
    if media is None:
        return head
    facts = [media.content_type, _size(media.bytes)]
    if media.width and media.height:
        facts.append(f"{media.width}x{media.height}")
    if media.duration_seconds is not None:
        facts.append(f"{media.duration_seconds:.1f} s")
    if media.pages is not None:
        facts.append(f"{media.pages} pages")
    lines = [head, "  " + ", ".join(facts)]
    if result.media and result.media.document_id:
        lines.append(f"  document {result.media.document_id}, version {result.media.version}")
    if result.media:
        expiry = result.media.url_expires_at
        lines.append(f"  link {result.media.url}" + (f"  (until {expiry:%H:%M:%S %Z})" if expiry else ""))
        for name, variant in (result.media.variants or {}).items():
            lines.append(f"  {name} {variant.url}")
    return "\n".join(lines)


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    return f"{count / 1024:.1f} KiB" if count < 1024 * 1024 else f"{count / 1024 / 1024:.1f} MiB"
