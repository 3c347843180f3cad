"""Test helpers: real servers on loopback, and a client that talks to the broker as the mobile app does."""

from __future__ import annotations

import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import requests
from flask import Flask
from werkzeug.serving import BaseWSGIServer, make_server

from app.config import Settings
from app.services import Services

REPO = Path(__file__).resolve().parents[1]


def settings_env(settings: Settings, **overrides: str) -> dict[str, str]:
    """The environment of a `broker` process configured exactly like `settings` (AWS_* are inherited)."""
    inherited = {name: value for name, value in os.environ.items() if not name.startswith("BROKER_")}
    exported = {}
    for name, value in settings.model_dump().items():
        if value is None:
            continue
        text = ",".join(map(str, value)) if isinstance(value, tuple) else str(value)
        exported[f"BROKER_{name.upper()}"] = text
    return {**inherited, **exported, "PYTHONPATH": str(REPO), **overrides}


class ServedApp:
    """A WSGI app served over real HTTP on 127.0.0.1, in a thread."""

    def __init__(self, app: Flask) -> None:
        self.services: Services = app.extensions["broker"]
        self.server: BaseWSGIServer = make_server("127.0.0.1", 0, app, threaded=True)
        self.url = f"http://127.0.0.1:{self.server.server_port}"
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.thread.join(5)


@dataclass
class BrokerClient:
    """The mobile app's view of the broker: bearer token, tickets, direct upload to the store, polling."""

    api_url: str
    token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.token}"}

    def request_ticket(self, kind: str, content_type: str, size: int, **extra: Any) -> requests.Response:
        body = {"kind": kind, "content_type": content_type, "size": size, **extra}
        return requests.post(f"{self.api_url}/v1/uploads", json=body, headers=self.headers, timeout=10)

    def ticket(self, kind: str, content_type: str, data: bytes, **extra: Any) -> dict[str, Any]:
        response = self.request_ticket(kind, content_type, len(data), **extra)
        assert response.status_code == 201, response.text
        return response.json()  # type: ignore[no-any-return]

    @staticmethod
    def post_to_store(ticket: dict[str, Any], data: bytes, filename: str = "upload.bin") -> requests.Response:
        post = ticket["upload"]
        return requests.post(post["url"], data=post["fields"], files={"file": (filename, data)}, timeout=30)

    def upload(self, kind: str, content_type: str, data: bytes, **extra: Any) -> str:
        """Ticket + direct upload; returns the upload id."""
        ticket = self.ticket(kind, content_type, data, **extra)
        stored = self.post_to_store(ticket, data)
        assert stored.status_code in (200, 201, 204), stored.text
        return str(ticket["upload_id"])

    # --- resumable (multipart) uploads ----------------------------------------------------------------------
    def part_urls(self, upload_id: str, numbers: Iterable[int]) -> requests.Response:
        body = {"part_numbers": list(numbers)}
        url = f"{self.api_url}/v1/uploads/{upload_id}/parts"
        return requests.post(url, json=body, headers=self.headers, timeout=10)

    def stored_parts(self, upload_id: str) -> requests.Response:
        return requests.get(f"{self.api_url}/v1/uploads/{upload_id}/parts", headers=self.headers, timeout=10)

    def complete(self, upload_id: str, parts: dict[int, str]) -> requests.Response:
        body = {"parts": [{"part_number": n, "etag": etag} for n, etag in sorted(parts.items())]}
        url = f"{self.api_url}/v1/uploads/{upload_id}/complete"
        return requests.post(url, json=body, headers=self.headers, timeout=30)

    def cancel(self, upload_id: str) -> requests.Response:
        return requests.delete(f"{self.api_url}/v1/uploads/{upload_id}", headers=self.headers, timeout=10)

    def put_parts(self, ticket: dict[str, Any], data: bytes, numbers: Iterable[int]) -> dict[int, str]:
        """Send these parts of `data` to the store through presigned URLs; returns their ETags."""
        size = ticket["upload"]["part_size"]
        response = self.part_urls(ticket["upload_id"], numbers)
        assert response.status_code == 200, response.text
        etags = {}
        for part in response.json()["parts"]:
            number = part["part_number"]
            chunk = data[(number - 1) * size : number * size]
            assert part["headers"]["Content-Length"] == str(len(chunk))
            stored = requests.put(part["url"], data=chunk, headers=part["headers"], timeout=30)
            assert stored.status_code == 200, stored.text
            etags[number] = stored.headers["ETag"]
        return etags

    def status(self, upload_id: str) -> requests.Response:
        return requests.get(f"{self.api_url}/v1/uploads/{upload_id}", headers=self.headers, timeout=10)

    def media(self, upload_id: str) -> requests.Response:
        return requests.get(f"{self.api_url}/v1/media/{upload_id}", headers=self.headers, timeout=10)

    def wait_status(self, upload_id: str, wanted: Iterable[str], timeout: float = 20.0) -> dict[str, Any]:
        wanted = set(wanted)
        deadline = time.monotonic() + timeout
        body: dict[str, Any] = {}
        while time.monotonic() < deadline:
            body = self.status(upload_id).json()
            if body.get("status") in wanted:
                return body
            time.sleep(0.05)
        raise AssertionError(f"upload {upload_id} stayed {body.get('status')!r}, wanted {sorted(wanted)}")


def own_queues(prefix: str) -> dict[str, str]:
    """Settings for a private set of processing queues (images, videos, documents) named after `prefix`."""
    return {
        "queue_name": f"{prefix}-uploads",
        "video_queue_name": f"{prefix}-videos",
        "document_queue_name": f"{prefix}-documents",
    }


def stop_process_group(process: subprocess.Popen[bytes]) -> None:
    """SIGTERM a process started with `start_new_session=True` and everything it forked; SIGKILL after 20 s."""
    if process.poll() is None:
        os.killpg(process.pid, signal.SIGTERM)
        try:
            process.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait(10)
