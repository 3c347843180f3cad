"""The demo page (/demo) in headless Chromium against the real stack: the API over HTTP, the local S3 behind
its gate, Redis, and a `broker worker` process.

A user signs in through the link `broker dev` prints (token in the fragment), adds a 12 MB video and a JPEG
renamed `.mp4` as `workout_video`, then a photo and a text file as `workout_photo`. The video travels in parts
through the broker's multipart endpoints (two parts: the ticket's 8 MiB and the rest), the photo as one
presigned POST; both end `ready` with their poster / processed image shown from the store. The renamed JPEG is
refused by the worker (`type_mismatch`), the text file by the API before any byte moves (`unsupported_type`),
and each row shows its code. The page is waited on by its own state, never by sleeping.
"""

from __future__ import annotations

import random
import uuid
from fractions import Fraction
from pathlib import Path

import av
import pytest
from PIL import Image
from playwright.sync_api import Browser, ConsoleMessage, Locator, Page, expect

from tests import images
from tests.browser.conftest import SCREENSHOTS
from tests.conftest import client_for

VIDEO_BYTES = 12_000_000
PART_SIZE = 8 * 1024 * 1024  # the broker's default part size: the 12 MB video is two parts
FINAL_TIMEOUT_MS = 40_000


def noise_video(path: Path, min_bytes: int = VIDEO_BYTES) -> Path:
    """An H.264 MP4 of at least `min_bytes`: a second of seeded noise, losslessly coded (noise does not
    compress, so the size is the frames' own). 640x360, so the worker only remuxes it and takes a poster."""
    width, height, fps = 640, 360, 30
    rng = random.Random(11)
    frames = [
        av.VideoFrame.from_image(Image.frombytes("RGB", (width, height), rng.randbytes(width * height * 3)))
        for _ in range(4)
    ]
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=Fraction(fps), options={"preset": "ultrafast", "qp": "0"})
        stream.width, stream.height, stream.pix_fmt = width, height, "yuv420p"
        for index in range(fps + 2):
            frame = frames[index % len(frames)].reformat(format="yuv420p")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    assert path.stat().st_size >= min_bytes, path.stat().st_size
    return path


@pytest.fixture(scope="module")
def files(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("drop")
    made = {
        "squat.mp4": noise_video(folder / "squat.mp4"),
        "photo.jpg": folder / "photo.jpg",
        "renamed.mp4": folder / "renamed.mp4",
        "notes.txt": folder / "notes.txt",
    }
    made["photo.jpg"].write_bytes(images.jpeg(2000, 1500, orientation=6, gps=True))
    made["renamed.mp4"].write_bytes(images.jpeg(320, 240))  # JPEG bytes under a video's name and type
    made["notes.txt"].write_text("sets, reps, rest\n")
    return made


def row(page: Page, name: str) -> Locator:
    return page.locator(f'li.result[data-file="{name}"]')


def add_files(page: Page, kind: str, paths: list[Path], more: bool = False) -> None:
    """Pick the kind, then the files through the dashboard's "browse files" (a real file chooser); `more`:
    the dashboard already lists files, so its "Add more" opens the picker panel first."""
    page.select_option("#kind", kind)
    if more:
        page.locator(".uppy-DashboardContent-addMore").click()
    with page.expect_file_chooser() as chooser:
        page.locator(".uppy-Dashboard-browse").first.click()
    chooser.value.set_files(paths)


def test_the_demo_page_uploads_for_real_and_shows_each_outcome(
    browser: Browser, web_dist: Path, serve_with, api, worker, files: dict[str, Path]
) -> None:
    demo = serve_with(demo_dir=web_dist)  # same services as `api`, whose webhook the store notifies
    user = str(uuid.uuid4())
    client = client_for(demo, user)
    context = browser.new_context(viewport={"width": 1100, "height": 900})
    page = context.new_page()
    console: list[str] = []
    page.on(
        "console",
        lambda message: console.append(f"{message.type}: {message.text}") if _worth(message) else None,
    )
    page.on("pageerror", lambda error: console.append(f"pageerror: {error}"))
    try:
        page.goto(f"{demo.url}/demo/#token={client.token}")
        expect(page.locator("#who")).to_have_attribute("data-state", "signed-in")
        expect(page.locator("#who")).to_contain_text(user)
        assert "token" not in page.url  # the fragment is dropped from the address bar once read

        add_files(page, "workout_video", [files["squat.mp4"], files["renamed.mp4"]])
        # The second batch goes while the first is still in flight, each file with the kind picked for it.
        add_files(page, "workout_photo", [files["photo.jpg"], files["notes.txt"]], more=True)

        video, photo = row(page, "squat.mp4"), row(page, "photo.jpg")
        renamed, notes = row(page, "renamed.mp4"), row(page, "notes.txt")
        expect(video).to_have_attribute("data-state", "ready", timeout=FINAL_TIMEOUT_MS)
        expect(photo).to_have_attribute("data-state", "ready", timeout=FINAL_TIMEOUT_MS)
        expect(renamed).to_have_attribute("data-state", "rejected", timeout=FINAL_TIMEOUT_MS)
        expect(notes).to_have_attribute("data-state", "refused")

        # Both transfer paths ran: parts of the ticket's size for the video, one form POST for the photo.
        expect(video).to_have_attribute("data-method", "MULTIPART")
        expect(video).to_have_attribute("data-parts", "2")
        expect(video).to_contain_text("2 parts of 8.0 MiB")
        expect(photo).to_have_attribute("data-method", "POST")
        expect(renamed).to_have_attribute("data-code", "type_mismatch")
        expect(renamed.locator(".code")).to_contain_text("type_mismatch")
        expect(notes).to_have_attribute("data-code", "unsupported_type")
        expect(notes.locator(".code")).to_contain_text("unsupported_type")

        # The processed results come from the store: the poster and the image really load in the page.
        for shown in (
            video.locator('img[data-preview="poster"]'),
            photo.locator('img[data-preview="processed image"]'),
        ):
            expect(shown).to_be_visible()
            shown.evaluate("img => img.decode()")  # rejects unless the picture arrived and decoded
            assert shown.evaluate("img => img.naturalWidth") > 0
        expect(video.locator('a[data-link="video"]')).to_be_visible()
        expect(photo).to_contain_text("900\u00d71200")  # EXIF orientation 6 applied, fitted inside 1200 px
        # The dashboard's own summary counts the refused text file as the one failure.
        expect(page.locator(".uppy-StatusBar")).to_contain_text("3 of 4 files uploaded")

        # The broker agrees with what the page shows.
        video_id = video.get_attribute("data-upload-id")
        photo_id = photo.get_attribute("data-upload-id")
        assert client.status(video_id).json()["status"] == "ready"
        assert client.status(photo_id).json()["status"] == "ready"
        media = client.media(video_id).json()
        assert media["bytes"] >= VIDEO_BYTES * 0.9 and "poster" in media["variants"]
        rejected = client.status(renamed.get_attribute("data-upload-id")).json()
        assert rejected["error"]["code"] == "type_mismatch"

        SCREENSHOTS.mkdir(parents=True, exist_ok=True)
        shot = SCREENSHOTS / "demo.png"
        page.screenshot(path=str(shot), full_page=True)
        print(f"\nscreenshot of the demo page: {shot}")
    except AssertionError as failure:
        raise AssertionError(f"{failure}\nbrowser console:\n" + "\n".join(console)) from failure
    finally:
        context.close()


def _worth(message: ConsoleMessage) -> bool:
    """Errors and warnings, for the failure report (Chromium also logs each refused request as an error)."""
    return message.type in ("error", "warning")
