"""`broker dev` as a user with their own settings runs it: their secrets win, a busy port is refused before
anything starts, `var/dev.env` lets a second shell operate the same stack, and SIGINT to a stack started in
the background (SIGINT ignored, as a non-interactive shell does) stops every child, a busy work horse too."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path

import jwt
import pytest
import requests
from redis import Redis
from rq import Queue

from app.auth import mint_token
from app.devstack.processes import descendants, free_port, pid_alive
from tests import images
from tests.support import REPO

BANNER_TIMEOUT = 90
USER_JWT_SECRET = "the-users-own-jwt-secret-0123456789"
USER_WEBHOOK_TOKEN = "the-users-own-webhook-token"
USER_DEV_USER = "5a1e0000-0000-4000-8000-00000000beef"


def user_env(**settings: str) -> dict[str, str]:
    """A shell with no BROKER_*/AWS_* of the test session: only what the test says."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "AWS_"))}
    return {**env, "PYTHONPATH": str(REPO), **settings}


def start_dev(workdir: Path, port: int, env: dict[str, str]) -> tuple[subprocess.Popen[str], list[str]]:
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "dev", "--port", str(port)],
        cwd=workdir,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        # As `make dev &` from a script: a background job of a non-interactive shell ignores SIGINT.
        preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN),
    )
    lines: list[str] = []
    assert process.stdout is not None
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    return process, lines


def wait_banner(process: subprocess.Popen[str], lines: list[str]) -> str:
    deadline = time.monotonic() + BANNER_TIMEOUT
    while time.monotonic() < deadline and process.poll() is None:
        if any("Ctrl-C" in line for line in lines):
            return "".join(lines)
        time.sleep(0.1)
    raise AssertionError("".join(lines))


def dev_env_of(workdir: Path) -> dict[str, str]:
    """var/dev.env as a shell sees it after `set -a; . var/dev.env; set +a`."""
    shown = subprocess.run(
        ["bash", "-c", "set -a; . var/dev.env; set +a; env -0"],
        cwd=workdir,
        env={"PATH": os.environ["PATH"]},
        capture_output=True,
        check=True,
    ).stdout.decode()
    return dict(item.split("=", 1) for item in shown.split("\0") if "=" in item)


def test_a_busy_port_is_refused_before_anything_starts(tmp_path: Path):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run(
            [sys.executable, "-m", "app.cli", "dev", "--port", str(port)],
            cwd=tmp_path,
            env=user_env(BROKER_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0"),
            capture_output=True,
            text=True,
            timeout=60,
        )
    assert result.returncode == 2
    assert result.stdout == ""
    assert len(result.stderr.strip().splitlines()) == 1, result.stderr
    assert str(port) in result.stderr and "in use" in result.stderr
    assert not (tmp_path / "var" / "log").exists()  # no child was started


@pytest.fixture
def user_stack(tmp_path: Path):
    port = free_port()
    env = user_env(
        BROKER_JWT_SECRET=USER_JWT_SECRET,
        BROKER_WEBHOOK_TOKEN=USER_WEBHOOK_TOKEN,
        BROKER_S3_BUCKET="users-own-bucket",
        BROKER_DEV_USER=USER_DEV_USER,
        BROKER_REDIS_URL=f"redis://127.0.0.1:{free_port()}/0",  # nothing answers: a private one starts
    )
    process, lines = start_dev(tmp_path, port, env)
    yield process, lines, tmp_path, port
    if process.poll() is None:
        process.send_signal(signal.SIGTERM)
        process.wait(60)


def test_the_users_settings_win_a_second_shell_operates_the_stack_and_sigint_stops_everything(user_stack):
    process, lines, workdir, port = user_stack
    output = wait_banner(process, lines)
    api = f"http://127.0.0.1:{port}"

    # The user's secrets win: a token they mint themselves is accepted, the banner's is signed with theirs.
    own_token = mint_token(USER_JWT_SECRET, str(uuid.uuid4()))
    answer = requests.get(
        f"{api}/v1/uploads/{uuid.uuid4()}", headers={"Authorization": f"Bearer {own_token}"}
    )
    assert answer.status_code == 404, answer.text
    banner_token = output.split("dev token", 1)[1].split()[0]
    assert jwt.decode(banner_token, USER_JWT_SECRET, algorithms=["HS256"])["sub"] == USER_DEV_USER
    hook = requests.post(
        f"{api}/v1/events/s3",
        data="{}",
        headers={"Authorization": f"Bearer {USER_WEBHOOK_TOKEN}"},
        timeout=10,
    )
    assert hook.status_code != 401, hook.text

    # var/dev.env: the effective settings and the local stack's credentials and endpoint.
    loaded = dev_env_of(workdir)
    assert loaded["BROKER_JWT_SECRET"] == USER_JWT_SECRET
    assert loaded["BROKER_S3_BUCKET"] == "users-own-bucket"
    assert loaded["BROKER_S3_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    # The broker's own S3 requests go to moto itself; clients are sent through the gate.
    assert loaded["BROKER_S3_INTERNAL_ENDPOINT_URL"].startswith("http://127.0.0.1:")
    assert loaded["BROKER_S3_INTERNAL_ENDPOINT_URL"] != loaded["BROKER_S3_ENDPOINT_URL"]
    assert loaded["AWS_ACCESS_KEY_ID"] and loaded["AWS_SECRET_ACCESS_KEY"]
    assert (workdir / "var" / "dev.env").stat().st_mode & 0o077 == 0

    # A second shell, no AWS credentials of its own: every command talks to this stack.
    second_shell = f"set -a; . var/dev.env; set +a; {sys.executable} -m app.cli"
    shell_env = user_env()
    queues = subprocess.run(
        ["bash", "-c", f"{second_shell} queues --json"], cwd=workdir, env=shell_env, capture_output=True
    )
    assert queues.returncode == 0, queues.stderr
    assert any(queue["queue"] == "uploads" for queue in json.loads(queues.stdout)["queues"])
    for command in ("reconcile --json", "cleanup-temp --dry-run --json"):
        run = subprocess.run(
            ["bash", "-c", f"{second_shell} {command}"], cwd=workdir, env=shell_env, capture_output=True
        )
        assert run.returncode == 0, (command, run.stderr)
        json.loads(run.stdout)

    # `broker` by name, though this shell's PATH knows no virtualenv: var/dev.env puts the stack's first. Its
    # `broker token` is for the banner's dev user; an explicit --user wins.
    by_name = "set -a; . var/dev.env; set +a; broker"
    bare = {**user_env(), "PATH": "/usr/bin:/bin"}
    minted = subprocess.run(
        ["bash", "-c", f"{by_name} token; {by_name} token --user {uuid.UUID(int=7)}"],
        cwd=workdir,
        env=bare,
        capture_output=True,
        text=True,
    )
    assert minted.returncode == 0, minted.stderr
    subjects = [jwt.decode(t, USER_JWT_SECRET, algorithms=["HS256"])["sub"] for t in minted.stdout.split()]
    assert subjects == [USER_DEV_USER, str(uuid.UUID(int=7))]
    assert "; broker upload photo.jpg --kind avatar" in output  # the banner's hint is that command
    listed = subprocess.run(
        ["bash", "-c", f"{by_name} queues --json"], cwd=workdir, env=bare, capture_output=True
    )
    assert listed.returncode == 0, listed.stderr
    (workdir / "photo.jpg").write_bytes(images.jpeg(640, 480))
    uploaded = subprocess.run(
        ["bash", "-c", f"{by_name} upload photo.jpg --kind avatar --json --timeout 60s"],
        cwd=workdir,
        env=bare,
        capture_output=True,
        text=True,
        timeout=90,
    )
    assert uploaded.returncode == 0, uploaded.stderr
    document = json.loads(uploaded.stdout)
    assert document["status"] == "ready", document
    assert f"/user_{USER_DEV_USER}/profile/" in document["link"]["url"]  # the banner token's user

    # A second stack from the same directory would overwrite this one's var/: refused before anything starts.
    second = subprocess.run(
        [sys.executable, "-m", "app.cli", "dev", "--port", str(free_port())],
        cwd=workdir,
        env=user_env(BROKER_REDIS_URL=loaded["BROKER_REDIS_URL"]),
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert second.returncode == 2, second.stderr
    assert len(second.stderr.strip().splitlines()) == 1, second.stderr
    assert "another broker dev runs from this directory" in second.stderr
    assert (workdir / "var" / "dev.env").exists()

    # A work horse busy with a long job; then SIGINT to the backgrounded supervisor.
    redis = Redis.from_url(loaded["BROKER_REDIS_URL"])
    job = Queue(loaded.get("BROKER_QUEUE_NAME", "uploads"), connection=redis).enqueue("time.sleep", 300)
    deadline = time.monotonic() + 60
    while job.get_status(refresh=True) != "started" and time.monotonic() < deadline:
        time.sleep(0.2)
    assert job.get_status() == "started"
    children = descendants(process.pid)
    assert len(children) >= 8  # redis, moto, gate, API + its workers, worker + its horse, scheduler

    process.send_signal(signal.SIGINT)
    assert process.wait(90) == 0
    deadline = time.monotonic() + 15
    while [pid for pid in children if pid_alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in children if pid_alive(pid)]
    assert not (workdir / "var" / "dev.env").exists()
