"""The browser tests' fixtures: Debian's Chromium driven by Playwright, the demo bundle, a real worker.

Nothing here downloads a browser: Playwright launches /usr/bin/chromium (Debian's `chromium` package). A
machine without it gets it from apt-get when the tests run as root; otherwise, and when the bundle was never
built, the tests fail with what to do, never skip: a skipped browser test would pass CI without a browser.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from app.config import Settings
from tests.support import REPO, settings_env, stop_process_group

CHROMIUM = Path("/usr/bin/chromium")
WEB_DIST = REPO / "web" / "dist"
SCREENSHOTS = REPO / "var" / "screenshots"
# The machine's network is closed: without the background-networking flags Chromium keeps trying Google's
# hosts at start-up. No sandbox: the tests may run as root, where Chromium's sandbox refuses to start.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def _install_chromium() -> None:
    if CHROMIUM.exists():
        return
    if os.geteuid() == 0 and shutil.which("apt-get"):
        env = {**os.environ, "DEBIAN_FRONTEND": "noninteractive"}
        subprocess.run(["apt-get", "update", "-qq"], check=False, env=env)
        subprocess.run(["apt-get", "install", "-y", "-qq", "chromium"], check=False, env=env)
    if not CHROMIUM.exists():
        pytest.fail(
            f"{CHROMIUM} is missing: install Debian's chromium package (apt-get install chromium, as root); "
            "Playwright's own browser download does not work here",
            pytrace=False,
        )


@pytest.fixture(scope="session")
def web_dist() -> Path:
    if not (WEB_DIST / "index.html").is_file():
        pytest.fail(
            f"the demo page is not built ({WEB_DIST} has no index.html): run `make npm-projects` "
            "(`make test` builds it first)",
            pytrace=False,
        )
    return WEB_DIST


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    _install_chromium()
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        # Each launch starts from a fresh, empty profile of Playwright's own (a new --user-data-dir).
        chromium = playwright.chromium.launch(
            executable_path=str(CHROMIUM), headless=True, args=CHROMIUM_ARGS
        )
        yield chromium
        chromium.close()


@pytest.fixture
def worker(settings: Settings, logs_dir: Path) -> Iterator[subprocess.Popen[bytes]]:
    """`broker worker` on the session's queues, as `broker dev` runs it: images, videos and PDFs for real."""
    log = (logs_dir / "browser-worker.log").open("ab")
    process = subprocess.Popen(
        [sys.executable, "-m", "app.cli", "worker", "--without-scheduler"],
        env=settings_env(settings),
        cwd=REPO,
        stdout=log,
        stderr=subprocess.STDOUT,
        start_new_session=True,  # its own process group: stopping it stops its work horse too
    )
    yield process
    stop_process_group(process)
    log.close()
