"""The TypeScript client (`clients/typescript`) against the real service.

Drift: the committed `src/schema.d.ts` must be what `npm run generate` makes from today's OpenAPI document,
so an API change that was not regenerated fails here (and the client's `tsc` run then shows what it breaks).

Real runs: the client is compiled with its own tsc settings to a temporary folder and driven by Node (global
fetch, FormData and Blob, as in React Native) against the API over HTTP, the local S3 behind its gate, SNS to
the webhook, Redis and a real RQ worker: a photo by presigned POST, a workout video by multipart (threshold
lowered so a 12 MB file takes three 5 MiB-sized parts), the same video stopped after its first part and
resumed by a new Node process that knows only the upload id and the file, an API refusal and a rejected
upload, each surfacing the API's code.
"""

from __future__ import annotations

import difflib
import io
import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import av
import pytest
import requests
from PIL import Image

from app.domain.multipart import MiB
from tests import images
from tests.support import REPO, BrokerClient

CLIENT = REPO / "clients" / "typescript"
NODE_MODULES = CLIENT / "node_modules"
SCHEMA = CLIENT / "src" / "schema.d.ts"

# Run by Node next to the compiled client: upload one file with `uploadFile`, print one JSON document (the
# result with the ticket, the progress seen and the part PUTs sent, or the error's code), like `broker upload
# --json`. `run` may resume an upload by id (then the kind and context are not passed: the app knows only
# the id and the file), stop after some parts (the app killed mid-upload) and set how many parts fly at once.
RUNNER = """
import { readFile } from "node:fs/promises";
import { basename } from "node:path";
import { BrokerError, createBrokerClient, uploadFile } from "./dist/src/index.js";

const [baseUrl, token, path, kind, contentType, context, runOptions] = process.argv.slice(2);
const run = JSON.parse(runOptions);
// The store's side of the network as the client uses it: every part PUT that leaves, by part number (a
// fetch whose signal is already aborted sends nothing, so it is not counted).
const puts = {};
const realFetch = globalThis.fetch;
globalThis.fetch = (input, init) => {
  const url = new URL(input instanceof Request ? input.url : String(input));
  const part = url.searchParams.get("partNumber");
  if (init?.method === "PUT" && part !== null && !init.signal?.aborted) puts[part] = (puts[part] ?? 0) + 1;
  return realFetch(input, init);
};
const stop = new AbortController();
const file = new Blob([await readFile(path)], { type: contentType });
let ticket = null;
const progress = [];
try {
  const result = await uploadFile(createBrokerClient({ baseUrl, token }), {
    ...(run.resume ? { resume: run.resume } : { kind, filename: basename(path), context: JSON.parse(context) }),
    file,
    ...(run.parallel ? { parallel: run.parallel } : {}),
    pollIntervalMs: 100,
    timeoutMs: 60_000,
    signal: stop.signal,
    onTicket: (issued) => { ticket = issued; },
    onProgress: (sent, total) => {
      progress.push([sent, total]);
      if (run.stopAfterParts !== undefined && progress.length >= run.stopAfterParts) stop.abort();
    },
  });
  console.log(JSON.stringify({ ...result, ticket, progress, puts }));
} catch (error) {
  if (!(error instanceof BrokerError)) throw error;
  const { code, status, uploadId, upload } = error;
  const failure = { code, message: error.message, status, uploadId, upload };
  console.log(JSON.stringify({ error: failure, ticket, progress, puts }));
}
"""


def require_node_modules() -> None:
    """A failure, not a skip: CI builds the npm projects before the tests, so their absence is a broken
    setup, never something to pass over quietly."""
    if shutil.which("node") is None or not (NODE_MODULES / ".bin" / "tsc").exists():
        pytest.fail(f"Node.js or {NODE_MODULES} is missing: run make npm-projects")


def test_the_committed_types_are_generated_from_todays_openapi_document(tmp_path: Path) -> None:
    require_node_modules()
    regenerated = tmp_path / "schema.d.ts"
    subprocess.run(
        ["sh", str(CLIENT / "scripts" / "generate.sh")],
        env={**os.environ, "PYTHON": sys.executable, "SCHEMA_OUT": str(regenerated)},
        check=True,
        capture_output=True,
        timeout=60,
    )
    committed, current = SCHEMA.read_text(), regenerated.read_text()
    if committed != current:
        diff = difflib.unified_diff(
            committed.splitlines(), current.splitlines(), "committed", "from the API", lineterm="", n=1
        )
        pytest.fail(
            f"{SCHEMA.relative_to(REPO)} is out of date with the API's OpenAPI document: run "
            f"`npm run generate` in clients/typescript and commit the result.\n" + "\n".join(list(diff)[:60])
        )


def test_the_readme_shows_the_example_that_is_type_checked() -> None:
    example = (CLIENT / "examples" / "react-native-upload.ts").read_text()
    code = example[example.index("import ") :]  # the README has its own words for the header comment
    assert code in (REPO / "README.md").read_text(), "copy examples/react-native-upload.ts into the README"


@pytest.fixture(scope="module")
def runner(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The client compiled by tsc (its own tsconfig: strict) and the Node script beside it."""
    require_node_modules()
    folder = tmp_path_factory.mktemp("ts-client")
    compiled = subprocess.run(
        [
            str(NODE_MODULES / ".bin" / "tsc"),
            "-p",
            str(CLIENT / "tsconfig.json"),
            "--outDir",
            str(folder / "dist"),
        ],
        capture_output=True,
        text=True,
        timeout=120,
    )
    assert compiled.returncode == 0, compiled.stdout + compiled.stderr
    (folder / "package.json").write_text('{"type": "module"}\n')  # the compiled files are ES modules
    (folder / "node_modules").symlink_to(NODE_MODULES)  # where Node finds openapi-fetch
    (folder / "upload.mjs").write_text(RUNNER)
    return folder


@pytest.fixture
def upload_with_node(runner: Path, drain):
    def run(
        client: BrokerClient,
        path: Path,
        kind: str,
        content_type: str,
        context: dict[str, str] | None = None,
        **run_options: str | int,
    ) -> dict:
        """`run_options`: `resume` (an upload id), `stopAfterParts`, `parallel`, as the runner reads them."""
        args = [client.api_url, client.token, str(path), kind, content_type, json.dumps(context or {})]
        args.append(json.dumps(run_options))
        process = subprocess.Popen(
            ["node", "upload.mjs", *args],
            cwd=runner,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        # The worker runs in this process (as in the other pipeline tests) while Node uploads and polls.
        deadline = time.monotonic() + 90
        while process.poll() is None:
            assert time.monotonic() < deadline, "the Node client did not finish"
            drain()
            time.sleep(0.1)
        out, err = process.communicate()
        assert process.returncode == 0, err
        return json.loads(out)  # type: ignore[no-any-return]

    return run


def test_a_photo_goes_by_presigned_post_and_ends_ready(upload_with_node, alice, tmp_path: Path) -> None:
    photo = tmp_path / "bench press.jpg"
    photo.write_bytes(images.jpeg(2000, 1500, orientation=6, gps=True))

    result = upload_with_node(alice, photo, "workout_photo", "image/jpeg", {"workout_id": "leg-day"})

    assert "error" not in result, result
    assert result["ticket"]["upload"]["method"] == "POST"
    assert result["progress"] == [[photo.stat().st_size, photo.stat().st_size]]
    upload, media = result["upload"], result["media"]
    assert (upload["upload_id"], upload["status"]) == (result["ticket"]["upload_id"], "ready")
    assert (upload["media"]["width"], upload["media"]["height"]) == (900, 1200)  # upright, fit in 1200 px
    assert "variants" not in upload["media"]  # a photo is one file
    assert media["content_type"] == "image/jpeg" and media["url_expires_at"]  # private: a 60 s link
    stored = Image.open(io.BytesIO(requests.get(media["url"], timeout=10).content))
    assert stored.size == (900, 1200) and not stored.getexif()  # what the link serves: no GPS left


def test_a_video_over_the_threshold_goes_in_parts_of_the_tickets_size(
    upload_with_node, alice, serve_with, tmp_path: Path
) -> None:
    video, size = three_part_video(tmp_path / "deadlift.mp4")
    low = small_parts_client(serve_with, alice)

    result = upload_with_node(low, video, "workout_video", "video/mp4", {"workout_id": "leg-day"})

    assert "error" not in result, result
    plan = result["ticket"]["upload"]
    assert (plan["method"], plan["part_size"], plan["part_count"]) == ("MULTIPART", 5 * MiB, 3)
    # Parts run in parallel, so they finish in any order; each one confirmed adds exactly its own length.
    confirmed = sorted(sent for sent, _ in result["progress"])
    steps = [after - before for before, after in zip([0, *confirmed], confirmed, strict=False)]
    assert sorted(steps) == sorted([5 * MiB, 5 * MiB, size - 10 * MiB])
    upload, media = result["upload"], result["media"]
    assert upload["status"] == "ready"
    assert upload["media"]["variants"] == ["poster"]  # 640x360 H.264 needs no 720p rendition
    assert (media["width"], media["height"]) == (640, 360)
    poster = requests.get(media["variants"]["poster"]["url"], timeout=10)
    assert poster.status_code == 200 and poster.content[:2] == b"\xff\xd8"  # a JPEG


def test_a_multipart_upload_stopped_after_its_first_part_resumes_with_only_the_missing_parts(
    upload_with_node, alice, serve_with, tmp_path: Path
) -> None:
    video, size = three_part_video(tmp_path / "squat.mp4")
    low = small_parts_client(serve_with, alice)

    # The app is stopped once part 1 is in the store (one part at a time, so no other part is in flight).
    stopped = upload_with_node(
        low, video, "workout_video", "video/mp4", {"workout_id": "leg-day"}, stopAfterParts=1, parallel=1
    )
    assert stopped["error"]["code"] == "aborted", stopped
    upload_id = stopped["ticket"]["upload_id"]
    assert stopped["puts"] == {"1": 1}
    listed = low.stored_parts(upload_id)
    assert listed.status_code == 200, listed.text
    assert [(p["part_number"], p["size"]) for p in listed.json()["parts"]] == [(1, 5 * MiB)]
    assert low.status(upload_id).json()["status"] == "pending"

    # A new process knows only the id and the file: no kind, no context, no ticket.
    resumed = upload_with_node(low, video, "", "video/mp4", resume=upload_id)

    assert "error" not in resumed, resumed
    assert resumed["puts"] == {"2": 1, "3": 1}  # part 1 was not sent again
    assert resumed["ticket"] is None  # no new ticket, so no `onTicket`
    assert resumed["progress"][0] == [5 * MiB, size]  # starts from what the store held
    assert resumed["progress"][-1] == [size, size]
    upload, media = resumed["upload"], resumed["media"]
    assert (upload["upload_id"], upload["status"]) == (upload_id, "ready")
    assert upload["media"]["variants"] == ["poster"]
    assert (media["width"], media["height"]) == (640, 360)

    # Resuming again (the app restarted after completion) only waits for the result.
    again = upload_with_node(low, video, "", "video/mp4", resume=upload_id)
    assert (again["upload"]["status"], again["puts"]) == ("ready", {})


def test_resuming_what_cannot_be_resumed_gives_the_apis_code(upload_with_node, alice, tmp_path: Path) -> None:
    photo = tmp_path / "plank.jpg"
    photo.write_bytes(images.jpeg(64, 64))

    unknown = upload_with_node(alice, photo, "", "image/jpeg", resume=str(uuid.uuid4()))
    assert (unknown["error"]["code"], unknown["error"]["status"]) == ("not_found", 404)

    posted = alice.ticket(
        "workout_photo", "image/jpeg", photo.read_bytes(), context={"workout_id": "leg-day"}
    )
    single = upload_with_node(alice, photo, "", "image/jpeg", resume=posted["upload_id"])
    assert (single["error"]["code"], single["error"]["status"]) == ("not_multipart", 409)
    assert single["puts"] == {}


def test_a_refusal_and_a_rejection_surface_the_apis_codes(upload_with_node, alice, tmp_path: Path) -> None:
    photo = tmp_path / "avatar.jpg"
    photo.write_bytes(images.jpeg(64, 64))
    refused = upload_with_node(alice, photo, "avatar", "application/pdf")
    assert refused["ticket"] is None
    assert (refused["error"]["code"], refused["error"]["status"]) == ("unsupported_type", 415)

    notes = tmp_path / "notes.jpg"
    notes.write_bytes(b"these are my workout notes, not a photo\n" * 50)
    rejected = upload_with_node(alice, notes, "avatar", "image/jpeg")
    assert rejected["error"]["code"] == "type_mismatch"
    assert rejected["error"]["upload"]["status"] == "rejected"
    assert rejected["error"]["uploadId"] == rejected["ticket"]["upload_id"]


def three_part_video(path: Path) -> tuple[Path, int]:
    """A video that takes three parts of 5 MiB (5, 5, the rest), and its size."""
    video = noisy_video(path, frames=28)
    size = video.stat().st_size
    assert 10 * MiB < size <= 15 * MiB, size
    return video, size


def small_parts_client(serve_with: Any, user: BrokerClient) -> BrokerClient:
    """`user` on an API whose multipart threshold and part size are 5 MiB, S3's smallest part."""
    served = serve_with(multipart_threshold_bytes=5 * MiB, multipart_part_size_bytes=5 * MiB)
    return BrokerClient(served.url, user.token)


def noisy_video(path: Path, frames: int) -> Path:
    """A real H.264 video of lossless noise (about 0.43 MB a frame), so a few frames pass the threshold."""
    with av.open(str(path), "w") as out:
        stream = out.add_stream("libx264", rate=30, options={"preset": "ultrafast", "crf": "0"})
        stream.width, stream.height, stream.pix_fmt = 640, 360, "yuv420p"
        for index in range(frames):
            noise = Image.frombytes("RGB", (640, 360), os.urandom(640 * 360 * 3))
            frame = av.VideoFrame.from_image(noise).reformat(format="yuv420p")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path
