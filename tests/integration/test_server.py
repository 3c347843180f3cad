"""`broker serve` as a real process: slow clients cannot starve it, its logs are JSON lines, the server's own
refusals are JSON errors, gunicorn takes GUNICORN_CMD_ARGS, and bad settings stop it before it binds."""

from __future__ import annotations

import json
import socket
import subprocess
import sys
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
import requests

from app.devstack.processes import free_port
from tests.support import settings_env

STARTUP_TIMEOUT = 60
PROBE_TIMEOUT = 5  # "answers within a few seconds", generous on a loaded 2-core machine


class Served:
    def __init__(self, args: list[str], env: dict[str, str], log: Path) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log = log
        self._file = log.open("wb")
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(self.port), *args],
            env=env,
            stdout=self._file,
            stderr=subprocess.STDOUT,
        )
        deadline = time.monotonic() + STARTUP_TIMEOUT
        while time.monotonic() < deadline and self.process.poll() is None:
            try:
                requests.get(f"{self.url}/healthz", timeout=2)
                return
            except requests.RequestException:
                time.sleep(0.2)
        raise AssertionError(f"broker serve did not start:\n{log.read_text()}")

    def lines(self) -> list[dict]:
        return [json.loads(line) for line in self.log.read_text().splitlines() if line.strip()]

    def stop(self) -> None:
        self.process.terminate()
        self.process.wait(30)
        self._file.close()


@pytest.fixture
def serve(settings, tmp_path: Path) -> Iterator:
    started: list[Served] = []

    def start(*args: str, **env: str) -> Served:
        served = Served(list(args), settings_env(settings, **env), tmp_path / f"serve-{len(started)}.log")
        started.append(served)
        return served

    yield start
    for served in started:
        served.stop()


def raw_request(url: str, data: bytes) -> bytes:
    """Send `data`, read the answer. A server that refuses a request it has not fully read closes with
    bytes unread, and the kernel may then reset the connection before the answer is read: try again."""
    host, port = url.removeprefix("http://").split(":")
    for _ in range(10):
        with socket.create_connection((host, int(port)), timeout=10) as sock:
            answer = b""
            try:
                sock.sendall(data)
                while chunk := sock.recv(65536):
                    answer += chunk
            except ConnectionResetError:
                continue
            return answer
    raise AssertionError("every attempt was reset before an answer arrived")


def json_error(answer: bytes) -> tuple[int, dict]:
    head, body = answer.split(b"\r\n\r\n", 1)
    assert b"content-type: application/json" in head.lower()
    return int(head.split()[1]), json.loads(body)


def slow_clients(url: str, count: int, hold_seconds: float) -> threading.Thread:
    """`count` connections that send headers and a few bytes of a body, then nothing; each gives up after
    `hold_seconds` by itself."""
    host, port = url.removeprefix("http://").split(":")
    opened = threading.Event()

    def run() -> None:
        sockets = []
        try:
            for _ in range(count):
                sock = socket.create_connection((host, int(port)), timeout=10)
                sock.sendall(
                    b"POST /v1/events/s3 HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer t\r\n"
                    b'Content-Type: application/json\r\nContent-Length: 5000\r\n\r\n{"Rec'
                )
                sockets.append(sock)
            opened.set()
            time.sleep(hold_seconds)
        finally:
            opened.set()
            for sock in sockets:
                sock.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    assert opened.wait(30)
    return thread


@pytest.mark.parametrize("count", [8, 64])
def test_slow_clients_do_not_starve_healthz(serve, count):
    served = serve()
    clients = slow_clients(served.url, count, hold_seconds=15)
    time.sleep(0.5)  # let the server take every slow connection in
    for _ in range(5):
        started = time.monotonic()
        assert requests.get(f"{served.url}/healthz", timeout=PROBE_TIMEOUT).status_code == 200
        assert time.monotonic() - started < PROBE_TIMEOUT
    clients.join(30)


def test_waitress_logs_json_and_refuses_in_the_json_error_shape(serve):
    served = serve()
    requests.get(f"{served.url}/healthz", headers={"User-Agent": "probe/1"}, timeout=10)
    status, body = json_error(raw_request(served.url, b"GARBAGE\r\n\r\n"))
    assert (status, body["error"]["code"]) == (400, "bad_request")
    # Just over the 16,000-byte cap: the server reads it all before refusing (more would be reset unread).
    big_header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 16200 + b"\r\n\r\n"
    status, body = json_error(raw_request(served.url, big_header))
    assert (status, body["error"]["code"]) == (431, "request_header_fields_too_large")
    status, body = json_error(
        raw_request(served.url, b"POST /v1/events/s3 HTTP/1.1\r\nHost: x\r\nContent-Length: 10000000\r\n\r\n")
    )
    assert (status, body["error"]["code"]) == (413, "request_too_large")
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        access = [line for line in served.lines() if line.get("name") == "upload_broker.access"]
        if access:
            break
        time.sleep(0.1)
    assert any(
        line["path"] == "/healthz" and line["status"] == 200 and line["user_agent"] == "probe/1"
        for line in access
    )


def test_gunicorn_takes_a_config_file_and_gunicorn_cmd_args_logs_json_and_refuses_in_json(serve, tmp_path):
    config = tmp_path / "gunicorn.conf.py"
    config.write_text("limit_request_line = 200\nworkers = 3\n")
    # Layers: the file over our defaults (the request-line limit), GUNICORN_CMD_ARGS over the file (workers).
    served = serve("--server", "gunicorn", "--config", str(config), GUNICORN_CMD_ARGS="--workers 1")
    long_line = b"GET /healthz?" + b"a" * 300 + b" HTTP/1.1\r\nHost: x\r\n\r\n"
    status, body = json_error(raw_request(served.url, long_line))
    assert (status, body["error"]["code"]) == (414, "request_line_too_long")
    big_header = b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Big: " + b"a" * 9000 + b"\r\n\r\n"
    status, body = json_error(raw_request(served.url, big_header))
    assert (status, body["error"]["code"]) == (431, "request_header_fields_too_large")
    status, body = json_error(raw_request(served.url, b"GET /healthz HTTP/1.1\r\nNo colon here\r\n\r\n"))
    assert (status, body["error"]["code"]) == (400, "bad_request")
    requests.get(f"{served.url}/healthz", timeout=10)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline and not (  # both are written by other threads, in no set order
        any(line.get("name") == "gunicorn.access" for line in served.lines())
        and any("Control socket" in line["message"] for line in served.lines())
    ):
        time.sleep(0.1)
    lines = served.lines()  # every line parses as JSON
    assert any(line.get("name") == "gunicorn.access" and line["status"] == 200 for line in lines)
    assert (
        sum("Booting worker" in line["message"] for line in lines) == 1
    )  # --workers 1 from the env beats the file's 3
    sockets = [line["message"] for line in lines if "Control socket" in line["message"]]
    assert sockets and all(str(served.port) in message for message in sockets)  # one per instance


def test_production_without_secrets_stops_before_binding(settings):
    env = settings_env(settings, BROKER_ENV="production")
    for name in ("BROKER_JWT_SECRET", "BROKER_WEBHOOK_TOKEN", "BROKER_SNS_TOPIC_ARN"):
        env.pop(name, None)
    with socket.socket() as held:  # the port is taken: only an error *before* binding can be about settings
        held.bind(("127.0.0.1", 0))
        port = held.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "serve", "--port", str(port)],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert "BROKER_JWT_SECRET" in result.stderr and "BROKER_WEBHOOK_TOKEN" in result.stderr


def test_a_bad_user_id_is_a_usage_error_not_a_traceback(settings):
    result = subprocess.run(
        [sys.executable, "-m", "app.cli", "token", "--user", "not-a-uuid"],
        env=settings_env(settings),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Traceback" not in result.stderr
    assert "Invalid value for '--user'" in result.stderr


@pytest.mark.parametrize("server", ["waitress", "gunicorn"])
def test_connections_are_spread_over_every_server_process(serve, server):
    """A socket per process (SO_REUSEPORT): a client's keep-alive connections do not all land on one."""
    served = serve("--server", server, "--workers", "2")
    sessions = [requests.Session() for _ in range(16)]  # one keep-alive connection each
    for session in sessions:
        for _ in range(3):
            assert session.get(f"{served.url}/healthz", headers={"User-Agent": "spread/1"}, timeout=10).ok
    for session in sessions:
        session.close()
    deadline, pids = time.monotonic() + 10, set()
    while time.monotonic() < deadline and len(pids) < 2:
        pids = {
            line["pid"]
            for line in served.lines()
            if line.get("message") == "request" and line.get("user_agent") == "spread/1"
        }
        time.sleep(0.1)
    assert len(pids) == 2  # 16 connections on one of two sockets by chance: 2 in 65,536
