"""Bytes to the store: one presigned POST, or presigned part PUTs sent by a few threads.

Every try streams from the file (`bodies`); a try that fails on the way (connection reset or refused, a
timeout, a 5xx, an expired part URL) is undone on the progress bar and made again after a doubling delay.
What no retry fixes raises `TransferLost` (try again later: a multipart upload resumes from the parts the
store holds) or `StoreRefused` (the store said no for good). The store session carries no credentials:
the presigned URL is the authority, and the broker's bearer token is never sent to the store.

The sender threads are daemons and the caller waits on a queue with a timeout, so Ctrl-C stops the process
at once, even while a part is on the wire.
"""

from __future__ import annotations

import queue
import re
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import requests
from requests.adapters import HTTPAdapter

from app.client.api import ApiRefused, Unreachable
from app.client.bodies import FileSlice, FormBody, OnRead
from app.client.parts import RetryPolicy, check_signed_length, span, windows
from app.domain.multipart import PartPlan
from schemas.uploads import PartUrl, PresignedPost

TIMEOUTS = (10.0, 120.0)  # connect; then per socket read (the store answers once the whole body is in)
RENEW_MARGIN = timedelta(seconds=60)  # a part URL this close to expiry is asked for again before use
RETRYABLE_CODES = frozenset({"RequestTimeout", "IncompleteBody", "SlowDown", "InternalError"})


class StoreRefused(Exception):
    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    @property
    def expired(self) -> bool:
        return self.status == 403 and "expired" in self.message.lower()

    @property
    def retryable(self) -> bool:
        return self.status >= 500 or self.status in (408, 429) or self.code in RETRYABLE_CODES


class TransferLost(Exception):
    """Retries did not get the bytes through: the connection is gone for now."""


def store_session(parallel: int) -> requests.Session:
    session = requests.Session()
    session.mount("http://", HTTPAdapter(pool_maxsize=parallel))
    session.mount("https://", HTTPAdapter(pool_maxsize=parallel))
    return session


def store_error(response: requests.Response) -> StoreRefused:
    """S3's XML error (`<Code>`, `<Message>`), or the bare status."""
    code = re.search(r"<Code>([^<]*)</Code>", response.text)
    message = re.search(r"<Message>([^<]*)</Message>", response.text)
    return StoreRefused(
        response.status_code,
        code.group(1) if code else f"http_{response.status_code}",
        message.group(1) if message else response.reason or "",
    )


def post_file(
    session: requests.Session,
    post: PresignedPost,
    path: Path,
    size: int,
    content_type: str,
    on_bytes: OnRead,
    retry: RetryPolicy,
) -> None:
    """The whole file in one presigned POST (fields first, file last), retried from the start."""
    last = ""
    for attempt in range(1, retry.attempts + 1):
        if attempt > 1:
            time.sleep(retry.delay(attempt - 1))
        with FormBody(post.fields, path, size, content_type, on_bytes) as body:
            try:
                headers = {"Content-Type": body.content_type}
                response = session.post(post.url, data=body, headers=headers, timeout=TIMEOUTS)
            except requests.RequestException as error:
                on_bytes(-body.sent)
                last = f"{type(error).__name__}: {error}"
                continue
        if response.ok:
            return
        on_bytes(-body.sent)
        refused = store_error(response)
        if not refused.retryable:
            raise refused
        last = str(refused)
    raise TransferLost(f"the upload did not get through: {last} (after {retry.attempts} tries)")


class PartUrls:
    """Presigned part URLs, asked for in windows (≤ 100 a call) as the senders reach them, and asked for
    again when one is about to expire (each lives ≤ 15 min; a slow phone takes longer than that per 100)."""

    def __init__(self, fetch: Callable[[list[int]], list[PartUrl]], numbers: list[int]) -> None:
        self._fetch = fetch
        self._pending = list(numbers)
        self._cache: dict[int, PartUrl] = {}
        self._lock = threading.Lock()

    def get(self, number: int) -> PartUrl:
        with self._lock:
            url = self._cache.get(number)
            if url is None or _expires_soon(url):
                start = self._pending.index(number)
                window = next(windows(self._pending[start:]))
                self._cache.update((part.part_number, part) for part in self._fetch(window))
                url = self._cache[number]
            return url

    def forget(self, number: int) -> None:
        with self._lock:
            self._cache.pop(number, None)

    def sent(self, number: int) -> None:
        with self._lock:
            self._cache.pop(number, None)
            self._pending.remove(number)


def _expires_soon(url: PartUrl) -> bool:
    expires = url.expires_at if url.expires_at.tzinfo else url.expires_at.replace(tzinfo=UTC)
    return expires - datetime.now(UTC) < RENEW_MARGIN


def send_part(
    session: requests.Session,
    urls: PartUrls,
    plan: PartPlan,
    path: Path,
    number: int,
    on_bytes: OnRead,
    retry: RetryPolicy,
) -> str:
    """PUT one part with exactly the headers the broker signed; its ETag."""
    part = span(plan, number)
    last = ""
    for attempt in range(1, retry.attempts + 1):
        if attempt > 1:
            time.sleep(retry.delay(attempt - 1))
        try:
            url = urls.get(number)
        except Unreachable as error:
            last = str(error)
            continue
        except ApiRefused as refused:
            if not refused.transient:
                raise
            last = str(refused)
            continue
        check_signed_length(plan, number, url.headers.get("Content-Length"))
        with FileSlice(path, part.offset, part.length, on_bytes) as body:
            try:
                response = session.put(url.url, data=body, headers=url.headers, timeout=TIMEOUTS)
            except requests.RequestException as error:
                on_bytes(-body.sent)
                last = f"{type(error).__name__}: {error}"
                continue
        if response.ok:
            urls.sent(number)
            return response.headers["ETag"]
        on_bytes(-body.sent)
        refused_by_store = store_error(response)
        if refused_by_store.expired:
            urls.forget(number)
        elif not refused_by_store.retryable:
            raise refused_by_store
        last = str(refused_by_store)
    raise TransferLost(f"part {number} did not get through: {last} (after {retry.attempts} tries)")


def send_parts(
    send: Callable[[int], str], numbers: list[int], parallel: int, on_part: Callable[[int, str], None]
) -> None:
    """`send(number)` for every part on up to `parallel` threads; `on_part(number, etag)` as each lands.
    The first part that cannot be sent stops the others from starting and is raised."""
    todo: queue.SimpleQueue[int] = queue.SimpleQueue()
    for number in numbers:
        todo.put(number)
    results: queue.SimpleQueue[tuple[int, str | Exception]] = queue.SimpleQueue()
    stop = threading.Event()

    def sender() -> None:
        while not stop.is_set():
            try:
                number = todo.get_nowait()
            except queue.Empty:
                return
            try:
                results.put((number, send(number)))
            except Exception as error:
                results.put((number, error))

    for _ in range(min(parallel, len(numbers))):
        threading.Thread(target=sender, name="part-sender", daemon=True).start()
    try:
        for _ in numbers:
            number, outcome = _next(results)
            if isinstance(outcome, Exception):
                raise outcome
            on_part(number, outcome)
    finally:
        stop.set()


def _next(results: queue.SimpleQueue[tuple[int, str | Exception]]) -> tuple[int, str | Exception]:
    while True:  # a short timeout keeps the main thread responsive to Ctrl-C
        try:
            return results.get(timeout=0.25)
        except queue.Empty:
            continue
