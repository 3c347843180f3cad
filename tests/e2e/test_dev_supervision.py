"""`broker dev` keeps its stack running through the real faults: a SIGKILLed worker, API, scheduler or local S3
is started again (said once when it goes, once when it is back) while the others keep running, a restarted
local S3 has its bucket, topic and notification wiring again before anyone uses it, an upload still ends
`ready` after each, and SIGINT still stops everything, the restarted children included."""

from __future__ import annotations

import os
import re
import shlex
import signal
import subprocess
import sys
import threading
import time
from pathlib import Path

import boto3
import pytest
import requests
from botocore.config import Config

from app.devstack.local_s3 import LOCAL_ACCESS_KEY, LOCAL_REGION, LOCAL_SECRET_KEY, TOPIC_NAME
from app.devstack.processes import descendants, free_port, pid_alive
from tests import images
from tests.support import REPO

BANNER_TIMEOUT = 90
BACK_TIMEOUT = 30  # the first start comes 1 s after the exit; the rest is the child's own start-up


class Stack:
    def __init__(self, workdir: Path, port: int) -> None:
        env = {k: v for k, v in os.environ.items() if not k.startswith(("BROKER_", "AWS_"))}
        self.workdir = workdir
        self.api = f"http://127.0.0.1:{port}"
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "dev", "--port", str(port)],
            cwd=workdir,
            # No Redis answers here: a private one starts, so nothing is shared with other tests.
            env={**env, "PYTHONPATH": str(REPO), "BROKER_REDIS_URL": f"redis://127.0.0.1:{free_port()}/0"},
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            text=True,
        )
        self.lines: list[str] = []
        assert self.process.stdout is not None
        threading.Thread(target=lambda: self.lines.extend(self.process.stdout), daemon=True).start()

    @property
    def output(self) -> str:
        return "".join(self.lines)

    def wait_for(self, text: str, timeout: float) -> float:
        """Seconds until `text` is in the output (it must come before the deadline)."""
        start = time.monotonic()
        while time.monotonic() - start < timeout:
            if text in self.output:
                return time.monotonic() - start
            assert self.process.poll() is None, self.output
            time.sleep(0.1)
        raise AssertionError(f"no {text!r} within {timeout} s:\n{self.output}")

    def children(self) -> dict[str, int]:
        """The supervisor's direct children by name (log name), as /proc shows them now."""
        named = {
            "app.devstack.moto_server": "moto",
            "app.devstack.policy_gate": "s3-gate",
            "serve": "api",
            "worker": "worker",
            "scheduler": "scheduler",
            "redis-server": "redis",
        }
        found: dict[str, int] = {}
        for stat in Path("/proc").glob("[0-9]*/stat"):
            try:
                fields = stat.read_text().rsplit(")", 1)[1].split()
                argv = (stat.parent / "cmdline").read_bytes().split(b"\0")
            except (OSError, IndexError):
                continue
            if int(fields[1]) != self.process.pid or fields[0] == "Z":
                continue
            # redis-server rewrites its argv into one title ("/usr/bin/redis-server 127.0.0.1:6379").
            words = [piece for word in argv for piece in word.decode(errors="replace").split()]
            for word, name in named.items():
                if any(part == word or part.endswith(f"/{word}") for part in words[:4]):
                    found[name] = int(stat.parent.name)
        return found

    def settings(self) -> dict[str, str]:
        text = (self.workdir / "var" / "dev.env").read_text()
        return {
            line.split("=", 1)[0]: shlex.split(line.split("=", 1)[1])[0]
            for line in text.splitlines()
            if line.startswith(("BROKER_", "AWS_"))
        }


@pytest.fixture
def stack(tmp_path: Path):
    running = Stack(tmp_path, free_port())
    running.wait_for("Ctrl-C", BANNER_TIMEOUT)
    yield running
    if running.process.poll() is None:
        running.process.send_signal(signal.SIGINT)
        running.process.wait(60)


def upload_ends_ready(stack: Stack) -> None:
    token = re.search(r"dev token\s+(\S+)", stack.output).group(1)
    headers = {"Authorization": f"Bearer {token}"}
    data = images.jpeg(640, 480)
    ticket = requests.post(
        f"{stack.api}/v1/uploads",
        json={"kind": "avatar", "content_type": "image/jpeg", "size": len(data)},
        headers=headers,
        timeout=10,
    )
    assert ticket.status_code == 201, ticket.text
    post = ticket.json()["upload"]
    stored = requests.post(post["url"], data=post["fields"], files={"file": ("me.jpg", data)}, timeout=30)
    assert stored.status_code == 204, stored.text
    upload_id = ticket.json()["upload_id"]
    deadline = time.monotonic() + 30
    status: dict[str, object] = {}
    while time.monotonic() < deadline:
        status = requests.get(f"{stack.api}/v1/uploads/{upload_id}", headers=headers, timeout=10).json()
        if status["status"] in ("ready", "rejected", "failed"):
            break
        time.sleep(0.2)
    assert status["status"] == "ready", status


def kill_and_wait_back(stack: Stack, name: str, others_untouched: bool = True) -> float:
    before = stack.children()
    assert name in before, before
    os.kill(before[name], signal.SIGKILL)
    stack.wait_for(f"{name} exited (killed by SIGKILL)", 10)
    seconds = stack.wait_for(f"{name} is back after", BACK_TIMEOUT)
    after = stack.children()
    assert after[name] != before[name]
    if others_untouched:
        assert {n: p for n, p in after.items() if n != name} == {n: p for n, p in before.items() if n != name}
    assert stack.output.count(f"{name} exited") == 1 and stack.output.count(f"{name} is back") == 1
    return seconds


def test_killed_children_come_back_the_local_s3_with_its_bucket_and_uploads_still_end_ready(stack: Stack):
    upload_ends_ready(stack)
    settings = stack.settings()

    for name in ("worker", "api", "scheduler"):
        kill_and_wait_back(stack, name)
        upload_ends_ready(stack)

    kill_and_wait_back(stack, "moto")
    moto = settings["BROKER_S3_INTERNAL_ENDPOINT_URL"]
    client = {
        "endpoint_url": moto,
        "region_name": LOCAL_REGION,
        "aws_access_key_id": LOCAL_ACCESS_KEY,
        "aws_secret_access_key": LOCAL_SECRET_KEY,
        "config": Config(s3={"addressing_style": "path"}),
    }
    s3, sns = boto3.client("s3", **client), boto3.client("sns", **client)
    bucket = settings["BROKER_S3_BUCKET"]
    s3.head_bucket(Bucket=bucket)
    assert s3.get_bucket_cors(Bucket=bucket)["CORSRules"]
    [topic] = s3.get_bucket_notification_configuration(Bucket=bucket)["TopicConfigurations"]
    assert topic["TopicArn"] == settings["BROKER_SNS_TOPIC_ARN"]
    assert topic["TopicArn"].endswith(f":{TOPIC_NAME}")
    [subscription] = sns.list_subscriptions_by_topic(TopicArn=topic["TopicArn"])["Subscriptions"]
    assert subscription["Endpoint"] == f"{stack.api}/v1/events/s3"
    upload_ends_ready(stack)

    # The private Redis comes back empty; whoever exits over it is started again, nobody stops the stack.
    kill_and_wait_back(stack, "redis", others_untouched=False)
    deadline = time.monotonic() + BACK_TIMEOUT
    while time.monotonic() < deadline:
        if requests.get(f"{stack.api}/readyz", timeout=5).status_code == 200:
            break
        time.sleep(0.2)
    upload_ends_ready(stack)

    everything = descendants(stack.process.pid)
    stack.process.send_signal(signal.SIGINT)
    assert stack.process.wait(90) == 0
    deadline = time.monotonic() + 15
    while [pid for pid in everything if pid_alive(pid)] and time.monotonic() < deadline:
        time.sleep(0.2)
    assert not [pid for pid in everything if pid_alive(pid)]
