"""`broker dev` as a new user runs it on a machine with no Redis running: one command, then a photo uploaded
with a ticket ends up ready, and Ctrl-C leaves no process behind."""

from __future__ import annotations

import os
import re
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import requests

from app.devstack.processes import descendants, free_port, pid_alive
from tests import images

BANNER_TIMEOUT = 60


@pytest.fixture
def dev_stack(tmp_path: Path):
    port = free_port()
    env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "AWS_"))}
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "dev", "--port", str(port)],
        cwd=tmp_path,
        # No Redis answers at this URL, so the stack starts its own, as on a bare machine.
        env={
            **env,
            "PYTHONPATH": str(Path(__file__).resolve().parents[2]),
            "BROKER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0",
        },
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    lines: list[str] = []
    assert process.stdout is not None
    threading.Thread(target=lambda: lines.extend(process.stdout), daemon=True).start()
    deadline = time.monotonic() + BANNER_TIMEOUT
    while (
        not any("Ctrl-C" in line for line in lines) and time.monotonic() < deadline and process.poll() is None
    ):
        time.sleep(0.1)
    output = "".join(lines)
    children = descendants(process.pid)
    yield process, output, tmp_path, children
    if process.poll() is None:
        process.send_signal(signal.SIGINT)
        process.wait(30)


def test_dev_stack_runs_the_whole_pipeline_and_stops_cleanly(dev_stack):
    process, output, workdir, children = dev_stack
    assert "Ctrl-C" in output, output
    api = re.search(r"API\s+(\S+)", output).group(1)
    token = re.search(r"dev token\s+(\S+)", output).group(1)
    assert api.startswith("http://127.0.0.1:")
    headers = {"Authorization": f"Bearer {token}"}
    data = images.jpeg(2000, 1500, orientation=6, gps=True)

    ticket = requests.post(
        f"{api}/v1/uploads",
        json={"kind": "avatar", "content_type": "image/jpeg", "size": len(data)},
        headers=headers,
        timeout=10,
    ).json()
    post = ticket["upload"]
    stored = requests.post(post["url"], data=post["fields"], files={"file": ("me.jpg", data)}, timeout=30)
    assert stored.status_code == 204

    deadline = time.monotonic() + 30
    status = {}
    while time.monotonic() < deadline:
        status = requests.get(f"{api}/v1/uploads/{ticket['upload_id']}", headers=headers, timeout=10).json()
        if status["status"] in ("ready", "rejected", "failed"):
            break
        time.sleep(0.2)
    assert status["status"] == "ready", status
    assert (status["media"]["width"], status["media"]["height"]) == (900, 1200)
    media = requests.get(f"{api}/v1/media/{ticket['upload_id']}", headers=headers, timeout=10).json()
    assert requests.get(media["url"], timeout=10).status_code == 200
    assert (workdir / "var" / "broker.db").exists()

    # The browser demo: its link carries the dev token in the fragment, and the page is served.
    assert f"{api}/demo/#token={token}" in output
    page = requests.get(f"{api}/demo/", timeout=10)
    assert page.status_code == 200, (
        f"{page.status_code} {page.text[:300]} (make npm-projects builds web/dist)"
    )
    assert "text/html" in page.headers["Content-Type"]

    process.send_signal(signal.SIGINT)
    assert process.wait(30) == 0
    time.sleep(0.5)
    assert {p.name for p in (workdir / "var" / "log").iterdir()} >= {
        "redis.log",
        "moto.log",
        "s3-gate.log",
        "api.log",
        "worker.log",
        "scheduler.log",
    }
    assert len(children) >= 6
    assert not [pid for pid in children if pid_alive(pid)]
