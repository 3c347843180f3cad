"""The broker's HTTP API as the mobile app calls it: one method per endpoint, answers parsed into the wire
schemas (`schemas.uploads`), every refusal raised as `ApiRefused` with the API's stable error code."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, TypeVar

import requests
from pydantic import BaseModel, ValidationError

from schemas.uploads import (
    CompleteResponse,
    MediaResponse,
    PartUrl,
    PartUrlsResponse,
    StoredPartInfo,
    StoredPartsResponse,
    TicketResponse,
    UploadStatusResponse,
)

M = TypeVar("M", bound=BaseModel)

CONNECT_TIMEOUT = 10.0
READ_TIMEOUT = 60.0  # completing a multipart upload of 10,000 parts takes the store a while


@dataclass(frozen=True)
class TicketRequest:
    kind: str
    content_type: str
    size: int
    filename: str | None = None
    resumable: bool = False
    context: dict[str, str] = field(default_factory=dict)


class ApiRefused(Exception):
    """The broker answered an error: `{"error": {"code", "message"}}` (or an HTTP status without one)."""

    def __init__(self, status: int, code: str, message: str) -> None:
        super().__init__(f"{code}: {message}")
        self.status = status
        self.code = code
        self.message = message

    @property
    def transient(self) -> bool:
        return self.status >= 500 or self.status == 429


class Unreachable(Exception):
    """No answer from the broker (refused, reset, timed out)."""


class BrokerApi:
    def __init__(self, base_url: str, token: str) -> None:
        self.base_url = base_url.rstrip("/")
        self._session = requests.Session()
        self._session.headers["Authorization"] = f"Bearer {token}"

    def uploads_url(self, upload_id: str, *rest: str) -> str:
        return "/".join([f"{self.base_url}/v1/uploads", upload_id, *rest])

    def create_upload(self, ticket: TicketRequest) -> TicketResponse:
        """`POST /v1/uploads`; the broker, not this client, judges the request (kind, type, size, context)."""
        body = {
            "kind": ticket.kind,
            "content_type": ticket.content_type,
            "size": ticket.size,
            "filename": ticket.filename,
            "resumable": ticket.resumable,
            "context": ticket.context,
        }
        return self._call(TicketResponse, "POST", f"{self.base_url}/v1/uploads", body)

    def part_urls(self, parts_url: str, numbers: list[int]) -> list[PartUrl]:
        return self._call(PartUrlsResponse, "POST", parts_url, {"part_numbers": numbers}).parts

    def stored_parts(self, upload_id: str) -> list[StoredPartInfo]:
        return self._call(StoredPartsResponse, "GET", self.uploads_url(upload_id, "parts")).parts

    def complete(self, complete_url: str, etags: dict[int, str]) -> CompleteResponse:
        parts = [{"part_number": number, "etag": etag} for number, etag in sorted(etags.items())]
        return self._call(CompleteResponse, "POST", complete_url, {"parts": parts})

    def status(self, upload_id: str) -> UploadStatusResponse:
        return self._call(UploadStatusResponse, "GET", self.uploads_url(upload_id))

    def media(self, upload_id: str) -> MediaResponse:
        return self._call(MediaResponse, "GET", f"{self.base_url}/v1/media/{upload_id}")

    def _call(self, model: type[M], method: str, url: str, body: dict[str, Any] | None = None) -> M:
        try:
            response = self._session.request(method, url, json=body, timeout=(CONNECT_TIMEOUT, READ_TIMEOUT))
        except requests.RequestException as error:
            raise Unreachable(f"{method} {url}: {error}") from None
        if response.status_code >= 400:
            raise refusal(response)
        try:
            return model.model_validate(response.json())
        except (ValueError, ValidationError) as error:
            raise ApiRefused(response.status_code, "unexpected_answer", f"{method} {url}: {error}") from None


def refusal(response: requests.Response) -> ApiRefused:
    """The API's `{"error": {"code", "message"}}`, or the bare HTTP status when a proxy answered instead."""
    try:
        error = response.json()["error"]
        return ApiRefused(response.status_code, str(error["code"]), str(error["message"]))
    except (ValueError, KeyError, TypeError):
        text = " ".join(response.text.split())[:200] or response.reason
        return ApiRefused(response.status_code, f"http_{response.status_code}", text)
