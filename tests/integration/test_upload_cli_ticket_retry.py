"""`broker upload` asks for its ticket again while the broker answers 503, as it does for parts."""

from __future__ import annotations

import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest
import requests
from PIL import Image

from tests.integration.test_upload_cli import PHOTO_ARGS, Run
from tests.support import settings_env


class FlakyFront(ThreadingHTTPServer):
    """A front on loopback (a load balancer during a deploy): the first `unavailable` ticket requests get a
    503; everything else is relayed to the broker."""

    def __init__(self, broker_url: str, unavailable: int) -> None:
        super().__init__(("127.0.0.1", 0), _Relay)
        self.broker_url, self.unavailable, self.refused = broker_url, unavailable, 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.server_address[1]}"


class _Relay(BaseHTTPRequestHandler):
    server: FlakyFront

    def do_GET(self) -> None:
        self._relay(None)

    def do_POST(self) -> None:
        body = self.rfile.read(int(self.headers.get("Content-Length", 0)))
        if self.path == "/v1/uploads" and self.server.refused < self.server.unavailable:
            self.server.refused += 1
            self._answer(503, b'{"error": {"code": "unavailable", "message": "deploying"}}')
            return
        self._relay(body)

    def _relay(self, body: bytes | None) -> None:
        headers = {
            name: self.headers[name] for name in ("Authorization", "Content-Type") if self.headers[name]
        }
        answer = requests.request(
            self.command, self.server.broker_url + self.path, data=body, headers=headers, timeout=30
        )
        self._answer(answer.status_code, answer.content)

    def _answer(self, status: int, body: bytes) -> None:
        self.send_response(status)
        self.send_header("Content-Type", "application/json")
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture
def flaky_front(alice) -> Iterator[FlakyFront]:
    front = FlakyFront(alice.api_url, unavailable=2)
    threading.Thread(target=front.serve_forever, daemon=True).start()
    yield front
    front.shutdown()
    front.server_close()


def test_a_ticket_answered_503_is_asked_again_and_the_upload_ends_ready(
    flaky_front, settings, alice, tmp_path, drain
):
    photo = tmp_path / "squat.jpg"
    Image.linear_gradient("L").resize((800, 600)).convert("RGB").save(photo, "JPEG", quality=90)
    env = settings_env(settings, BROKER_API_URL=flaky_front.url, BROKER_TOKEN=alice.token)
    run = Run([str(photo), *PHOTO_ARGS, "--json"], env, tmp_path)
    assert run.finish(drain) == 0, run.err
    assert flaky_front.refused == 2
    assert run.err.count("ticket not issued (the broker answered 503 unavailable); trying again") == 2
    assert run.document()["status"] == "ready"
