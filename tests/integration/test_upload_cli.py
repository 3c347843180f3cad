"""`broker upload`, the reference client, run as a user runs it (a subprocess) against the API over HTTP and
the local store: a photo by POST, a 40 MB workout video whose connection stalls midway (Ctrl-C) and a photo
whose connection drops (retries run out), each resumed by the printed command with only the missing parts,
an API refusal, a rejected upload.

The connection to the store runs through `StoreLink`, a TCP relay on loopback playing the phone's network:
the broker under test presigns part URLs for the relay's address, so every part PUT crosses it, and it can
stall or cut everything past a byte budget. It also notes which part numbers were PUT, from the wire.
"""

from __future__ import annotations

import json
import os
import re
import shlex
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
from pathlib import Path
from urllib.parse import urlsplit

import av
import pytest
from PIL import Image

from app.domain.multipart import MiB
from tests.support import BrokerClient, settings_env

PHOTO_ARGS = ["--kind", "workout_photo", "--context", "workout_id=w-cli"]
VIDEO_ARGS = ["--kind", "workout_video", "--context", "workout_id=w-cli"]
BUDGET = 8 * MiB + 256 * 1024  # part 1 (8 MiB) and the small requests around it; part 2 starts past it
PART_PUT = re.compile(rb"PUT /[^ ]*[?&]partNumber=(\d+)[& ]")


class StoreLink:
    """A TCP relay to the store. Past `budget` bytes sent up (client to store), `cut` closes the connection
    (and every later one at once); otherwise the bytes are swallowed and no answer comes (a stalled link)."""

    def __init__(self, store_url: str, budget: int | None = None, cut: bool = False) -> None:
        self.store = (urlsplit(store_url).hostname or "", urlsplit(store_url).port or 80)
        self.budget, self.cut = budget, cut
        self.sent_up = 0
        self.parts_put: list[int] = []
        self.lock = threading.Lock()
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self.listener.getsockname()[1]}"
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self._relay, args=(client,), daemon=True).start()

    def _relay(self, client: socket.socket) -> None:
        store = socket.create_connection(self.store)
        threading.Thread(target=self._down, args=(store, client), daemon=True).start()
        tail = b""
        try:
            while chunk := client.recv(65536):
                seen = tail + chunk
                with self.lock:
                    self.parts_put += [int(m[1]) for m in PART_PUT.finditer(seen) if m.end() > len(tail)]
                    allowed = len(chunk) if self.budget is None else max(0, self.budget - self.sent_up)
                    self.sent_up += min(allowed, len(chunk))
                tail = seen[-512:]
                if allowed:
                    store.sendall(chunk[:allowed])
                if allowed < len(chunk) and self.cut:
                    break
        except OSError:
            pass
        finally:
            for end in (client, store):
                end.close()

    @staticmethod
    def _down(store: socket.socket, client: socket.socket) -> None:
        try:
            while chunk := store.recv(65536):
                client.sendall(chunk)
        except OSError:
            pass

    def close(self) -> None:
        self.listener.close()


def assert_runs_this_broker(word: str, search_path: str) -> None:
    """The hint's command, pasted into a shell with this PATH, runs this checkout's `broker`: by name when
    PATH finds it, else by its path."""
    script = Path(sys.executable).parent / "broker"
    found = shutil.which(word, path=search_path) if word == "broker" else word
    assert found and Path(found).resolve() == script.resolve(), (word, search_path)


class Run:
    """`broker upload …` as a subprocess; stderr is read as it comes (the upload id is its first line)."""

    def __init__(self, args: list[str], env: dict[str, str], cwd: Path) -> None:
        self.process = subprocess.Popen(
            [sys.executable, "-m", "app.cli", "upload", *args],
            env=env,
            cwd=cwd,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.err_lines: list[str] = []
        self.out = ""
        assert self.process.stderr is not None and self.process.stdout is not None
        threading.Thread(target=lambda: self.err_lines.extend(self.process.stderr), daemon=True).start()
        self._out_reader = threading.Thread(target=self._read_out, daemon=True)
        self._out_reader.start()

    def _read_out(self) -> None:
        assert self.process.stdout is not None
        self.out = self.process.stdout.read()

    @property
    def err(self) -> str:
        return "".join(self.err_lines)

    def upload_id(self, timeout: float = 20) -> str:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            found = re.search(r"upload ([0-9a-f-]{36}):", self.err)
            if found:
                return found[1]
            assert self.process.poll() is None, self.err
            time.sleep(0.05)
        raise AssertionError(f"no upload id in: {self.err}")

    def finish(self, drain, timeout: float = 60) -> int:
        """Wait for the command, running the queued jobs meanwhile (the worker the CLI waits on)."""
        deadline = time.monotonic() + timeout
        while self.process.poll() is None:
            assert time.monotonic() < deadline, self.err
            drain()
            time.sleep(0.1)
        self._out_reader.join(5)
        time.sleep(0.05)  # the stderr reader's last lines
        return self.process.returncode

    def document(self) -> dict:
        return json.loads(self.out)


@pytest.fixture
def upload_cli(settings, tmp_path, alice):
    def run(*args: str, api_url: str | None = None) -> Run:
        env = settings_env(settings, BROKER_API_URL=api_url or alice.api_url, BROKER_TOKEN=alice.token)
        env.pop("COLUMNS", None)
        return Run(list(args), env, tmp_path)

    return run


@pytest.fixture(scope="module")
def noisy_png(tmp_path_factory) -> Path:
    """A real ~12 MB PNG (noise does not compress): two parts of the default 8 MiB."""
    path = tmp_path_factory.mktemp("png") / "session.png"
    noise = Image.frombytes("RGB", (2000, 2000), os.urandom(2000 * 2000 * 3))
    noise.save(path, "PNG", compress_level=1)
    return path


@pytest.fixture(scope="module")
def workout_video(tmp_path_factory) -> Path:
    """A real ~41 MB H.264 workout video (lossless noise, so it is big in a second): five 8 MiB parts."""
    path = tmp_path_factory.mktemp("video") / "deadlift.mp4"
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30, options={"preset": "ultrafast", "crf": "0"})
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for index in range(96):
            noise = Image.frombytes("RGB", (640, 360), os.urandom(640 * 360 * 3))
            frame = av.VideoFrame.from_image(noise).reformat(format="yuv420p")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    assert 40_000_000 <= path.stat().st_size <= 40 * MiB
    return path


def test_a_photo_goes_by_post_and_the_result_is_printed_as_json(upload_cli, tmp_path, drain):
    photo = tmp_path / "bench press.jpg"
    gradient = Image.linear_gradient("L").resize((1600, 1200)).convert("RGB")
    gradient.save(photo, "JPEG", quality=90)

    run = upload_cli(str(photo), *PHOTO_ARGS, "--json")
    assert run.finish(drain) == 0, run.err
    document = run.document()
    assert document["status"] == "ready"
    assert (document["media"]["width"], document["media"]["height"]) == (1200, 900)
    assert document["media"]["content_type"] == "image/jpeg"
    assert document["link"]["url"].startswith("http")
    assert document["transfer"]["method"] == "POST"


def test_a_40_mb_video_stalled_midway_and_stopped_with_ctrl_c_is_resumed_with_only_the_missing_parts(
    upload_cli, workout_video, serve_with, local_s3, alice, drain
):
    link = StoreLink(local_s3.s3_url, budget=BUDGET)
    broker = serve_with(s3_endpoint_url=link.url)  # presigns part URLs for the link's address
    run = upload_cli(str(workout_video), *VIDEO_ARGS, "--parallel", "1", api_url=broker.url)
    upload_id = run.upload_id()
    listed = wait_for_parts(alice, upload_id)
    wait_until(lambda: 2 in link.parts_put)  # part 2 is on its way, over a link that has stalled: Ctrl-C
    run.process.send_signal(signal.SIGINT)

    assert run.finish(drain, timeout=20) == 130, run.err
    assert listed == [(1, 8 * MiB)]
    assert link.parts_put == [1, 2]
    resume_line = run.err_lines[-1]
    assert f"1 of 5 parts of upload {upload_id} are stored; resume with: " in resume_line

    link.budget = None  # the connection is back
    command = shlex.split(resume_line.split("resume with: ", 1)[1])
    assert_runs_this_broker(command[0], os.environ["PATH"])
    assert command[1] == "upload" and command[-2:] == ["--resume", upload_id]
    resumed = upload_cli(*command[2:], "--json", api_url=broker.url)
    assert resumed.finish(drain) == 0, resumed.err
    assert link.parts_put.count(1) == 1  # part 1 was not sent again
    assert sorted(link.parts_put[2:]) == [2, 3, 4, 5]
    assert f"resuming upload {upload_id}: parts 1 in the store, sending 2-5" in resumed.err
    document = resumed.document()
    assert (document["upload_id"], document["status"]) == (upload_id, "ready")
    assert document["transfer"] == {
        "method": "MULTIPART",
        "part_count": 5,
        "parts_sent": [2, 3, 4, 5],
        "parts_reused": [1],
    }
    assert document["media"]["content_type"] == "video/mp4"
    assert (document["media"]["width"], document["media"]["height"]) == (640, 360)
    assert document["media"]["duration_seconds"] == pytest.approx(3.2, abs=0.1)
    link.close()


def test_a_dropped_connection_that_retries_cannot_fix_prints_how_to_resume(
    upload_cli, noisy_png, serve_with, local_s3, alice
):
    link = StoreLink(local_s3.s3_url, budget=BUDGET, cut=True)
    broker = serve_with(s3_endpoint_url=link.url)
    args = [str(noisy_png), *PHOTO_ARGS, "--resumable", "--parallel", "1", "--retries", "1"]
    run = upload_cli(*args, "--json", api_url=broker.url)

    assert run.finish(lambda: None, timeout=30) == 4, run.err
    upload_id = run.upload_id()
    line = run.err_lines[-1]
    assert line.startswith("part 2 did not get through"), line
    assert "(after 2 tries)" in line
    assert f"1 of 2 parts of upload {upload_id} are stored; resume with: " in line
    command = shlex.split(line.split("resume with: ", 1)[1])
    assert_runs_this_broker(command[0], os.environ["PATH"])
    assert command[1] == "upload" and command[-2:] == ["--resume", upload_id]
    assert run.document()["status"] == "interrupted"
    assert [(p["part_number"], p["size"]) for p in alice.stored_parts(upload_id).json()["parts"]] == [
        (1, 8 * MiB)
    ]
    assert alice.cancel(upload_id).status_code == 204
    link.close()


def test_an_api_refusal_is_one_code_and_message_line(upload_cli, tmp_path):
    photo = tmp_path / "avatar.jpg"
    Image.new("RGB", (64, 64), "red").save(photo, "JPEG")

    run = upload_cli(str(photo), "--kind", "avatar", "--content-type", "application/pdf")
    assert run.finish(lambda: None) == 1
    assert run.out == ""
    assert run.err.strip().startswith("unsupported_type: "), run.err
    assert len(run.err.strip().splitlines()) == 1


def test_a_rejected_upload_exits_3_with_its_rejection_code(upload_cli, tmp_path, drain):
    fake = tmp_path / "notes.jpg"
    fake.write_bytes(b"these are my workout notes, not a photo\n" * 50)

    run = upload_cli(str(fake), "--kind", "avatar", "--content-type", "image/jpeg")
    assert run.finish(drain) == 3, run.err
    assert run.out.startswith("rejected: avatar "), run.out
    assert "type_mismatch: " in run.out


def wait_until(condition, timeout: float = 30) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.05)


def wait_for_parts(client: BrokerClient, upload_id: str, timeout: float = 30) -> list[tuple[int, int]]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        parts = client.stored_parts(upload_id).json().get("parts") or []
        if parts:
            return [(part["part_number"], part["size"]) for part in parts]
        time.sleep(0.05)
    raise AssertionError(f"no part of {upload_id} reached the store")
