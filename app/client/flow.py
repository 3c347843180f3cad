"""The upload flow of the mobile app: ticket → bytes to the store → complete → wait for the result.

`Uploader.start` asks for a ticket and follows it: one presigned POST, or the parts of a multipart upload
(part URLs in windows, a few parts at a time, then `complete`). `Uploader.resume` picks a multipart upload up
again from the broker's answers alone (the upload's status, the parts the store holds, the length signed into
part 1's URL), sends only the missing parts and completes. Both then poll the upload until it is ready,
rejected or failed. `Uploader.state` says how far it got, so an interruption can be reported with the way to
resume.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from contextlib import AbstractContextManager
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path

from app.client.api import ApiRefused, BrokerApi, TicketRequest, Unreachable
from app.client.bodies import OnRead
from app.client.parts import NotTheSameFile, RetryPolicy, missing_parts, plan_for_resume, ranges
from app.client.transfer import PartUrls, post_file, send_part, send_parts, store_session
from app.domain.multipart import MiB, PartPlan
from schemas.uploads import MediaResponse, MultipartPlan, TicketResponse, UploadStatusResponse

# Where waiting ends: the broker has nothing more to do with the upload (`failed` waits for ops).
FINAL = frozenset({"ready", "rejected", "failed", "deleted", "expired", "superseded"})
FIRST_POLL, MAX_POLL = 0.2, 2.0  # seconds between status polls, growing by half each time

# (label, total bytes, bytes already in the store) -> a context whose value is told each block sent
ProgressBar = Callable[[str, int, int], AbstractContextManager[OnRead]]
Say = Callable[[str], None]  # one line for the person watching (the upload id comes first: resume needs it)


class Phase(StrEnum):
    TICKET = "ticket"
    TRANSFER = "transfer"
    COMPLETE = "complete"
    WAIT = "wait"


class CannotResume(Exception):
    pass


class WaitTimedOut(Exception):
    def __init__(self, status: UploadStatusResponse | None) -> None:
        super().__init__(f"still {status.status if status else 'unknown'}")
        self.status = status


@dataclass(frozen=True)
class LocalFile:
    path: Path
    content_type: str

    @property
    def size(self) -> int:
        return self.path.stat().st_size


@dataclass(frozen=True)
class Options:
    parallel: int = 4
    retry: RetryPolicy = field(default_factory=RetryPolicy)
    wait_timeout: float = 300.0


@dataclass
class State:
    """How far the flow got (for the report, and the resume hint after an interruption)."""

    phase: Phase = Phase.TICKET
    upload_id: str | None = None
    method: str | None = None  # POST or MULTIPART
    part_count: int = 0
    parts_reused: list[int] = field(default_factory=list)  # already in the store when resuming
    parts_sent: list[int] = field(default_factory=list)  # sent by this run


@dataclass(frozen=True)
class Result:
    status: UploadStatusResponse
    media: MediaResponse | None  # the link, once ready


class Uploader:
    def __init__(self, api: BrokerApi, options: Options, bar: ProgressBar, say: Say) -> None:
        self.api = api
        self.options = options
        self.state = State()
        self._bar = bar
        self._say = say
        self._store = store_session(options.parallel)
        self._etags: dict[int, str] = {}

    def start(self, file: LocalFile, ticket: TicketRequest) -> Result:
        answer = self._ticket(ticket)
        upload_id = self.state.upload_id = answer.upload_id
        how = answer.upload
        if isinstance(how, MultipartPlan):
            plan = PartPlan(ticket.size, how.part_size)
            self._say(f"upload {upload_id}: {plan.part_count} parts of {how.part_size / MiB:g} MiB")
            parts = list(range(1, plan.part_count + 1))
            self._send_parts(file, plan, how.parts_url, parts, {})
            self._complete(how.complete_url)
        else:
            self._say(f"upload {upload_id}: one POST of {ticket.size} bytes")
            self.state.method, self.state.phase = "POST", Phase.TRANSFER
            with self._bar("uploading", ticket.size, 0) as on_bytes:
                post_file(
                    self._store, how, file.path, ticket.size, file.content_type, on_bytes, self.options.retry
                )
        return self.wait(upload_id)

    def _ticket(self, ticket: TicketRequest) -> TicketResponse:
        """The ticket, asked again with backoff while the broker is unavailable (5xx, 429, no answer), as
        parts are. A retry after an answer that was lost on the way leaves one unused `pending` ticket
        behind, which expires and is swept like any other."""
        retry = self.options.retry
        for attempt in range(1, retry.attempts + 1):
            try:
                return self.api.create_upload(ticket)
            except ApiRefused as refused:
                if not refused.transient or attempt == retry.attempts:
                    raise
                problem = f"the broker answered {refused.status} {refused.code}"
            except Unreachable as unreachable:
                if attempt == retry.attempts:
                    raise
                problem = str(unreachable)
            delay = retry.delay(attempt)
            self._say(f"ticket not issued ({problem}); trying again in {delay:g} s")
            time.sleep(delay)
        raise AssertionError("unreachable: the last attempt returns or raises")

    def resume(self, upload_id: str, file: LocalFile) -> Result:
        self.state.upload_id = upload_id
        if self.api.status(upload_id).status != "pending":
            return self.wait(upload_id)  # completed already (the interruption came later): its result
        try:
            stored = self.api.stored_parts(upload_id)
        except ApiRefused as refused:
            if refused.code == "not_multipart":
                raise CannotResume(f"upload {upload_id} is a single POST: start a new upload") from None
            raise
        parts_url = self.api.uploads_url(upload_id, "parts")
        [first] = self.api.part_urls(parts_url, [1])
        plan = plan_for_resume(file.size, int(first.headers.get("Content-Length", "0")))
        missing = missing_parts(plan, {part.part_number: part.size for part in stored})
        self.state.parts_reused = sorted(part.part_number for part in stored)
        self._say(
            f"resuming upload {upload_id}: parts {ranges(self.state.parts_reused) or 'none'} in the store, "
            f"sending {ranges(missing) or 'none'}"
        )
        self._send_parts(file, plan, parts_url, missing, {part.part_number: part.etag for part in stored})
        self._complete(self.api.uploads_url(upload_id, "complete"))
        return self.wait(upload_id)

    def _send_parts(
        self, file: LocalFile, plan: PartPlan, parts_url: str, numbers: list[int], etags: dict[int, str]
    ) -> None:
        if file.size != plan.size:
            raise NotTheSameFile(f"the file is {file.size} bytes now, the upload {plan.size}")
        self.state.method = "MULTIPART"
        self.state.phase = Phase.TRANSFER
        self.state.part_count = plan.part_count
        self._etags = dict(etags)
        urls = PartUrls(lambda window: self.api.part_urls(parts_url, window), numbers)
        already = plan.size - sum(plan.part_length(number) for number in numbers)
        with self._bar("uploading", plan.size, already) as on_bytes:

            def send(number: int) -> str:
                return send_part(self._store, urls, plan, file.path, number, on_bytes, self.options.retry)

            send_parts(send, numbers, self.options.parallel, self._part_sent)

    def _part_sent(self, number: int, etag: str) -> None:
        self._etags[number] = etag
        self.state.parts_sent.append(number)

    def _complete(self, complete_url: str) -> None:
        self.state.phase = Phase.COMPLETE
        self.api.complete(complete_url, self._etags)

    def wait(self, upload_id: str) -> Result:
        """Poll the upload until the broker is done with it (or `wait_timeout` runs out)."""
        self.state.phase = Phase.WAIT
        deadline = time.monotonic() + self.options.wait_timeout
        pause, status = FIRST_POLL, None
        while True:
            try:
                status = self.api.status(upload_id)
            except (Unreachable, ApiRefused) as error:
                if isinstance(error, ApiRefused) and not error.transient:
                    raise
            if status is not None and status.status in FINAL:
                media = self.api.media(upload_id) if status.status == "ready" else None
                return Result(status, media)
            if time.monotonic() + pause > deadline:
                raise WaitTimedOut(status)
            time.sleep(pause)
            pause = min(MAX_POLL, pause * 1.5)
