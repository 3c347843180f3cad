"""/demo as HTTP, without a browser: off unless `BROKER_DEMO_DIR` is set, a clear error when the bundle was never
built, the bundle's files otherwise (and nothing outside it)."""

from __future__ import annotations

from pathlib import Path

import pytest
import requests

from app.devstack.dev import DEMO_BUNDLE
from tests.browser.conftest import WEB_DIST


@pytest.fixture
def bundle(tmp_path: Path) -> Path:
    (tmp_path / "assets").mkdir()
    (tmp_path / "index.html").write_text("<!doctype html><title>demo</title>")
    (tmp_path / "assets" / "index-abc123.js").write_text("console.log('demo')")
    (tmp_path.parent / "secret.txt").write_text("not part of the bundle")
    return tmp_path


def test_there_is_no_demo_unless_it_is_configured(api) -> None:
    answer = requests.get(f"{api.url}/demo/", timeout=10)

    assert answer.status_code == 404
    assert answer.json()["error"]["code"] == "not_found"


def test_an_unbuilt_bundle_says_how_to_build_it(serve_with, tmp_path: Path) -> None:
    demo = serve_with(demo_dir=tmp_path / "dist")

    answer = requests.get(f"{demo.url}/demo/", timeout=10)

    assert answer.status_code == 503
    error = answer.json()["error"]
    assert error["code"] == "demo_not_built"
    assert "make npm-projects" in error["message"]


def test_the_bundle_is_served_and_nothing_outside_it(serve_with, bundle: Path) -> None:
    demo = serve_with(demo_dir=bundle)

    page = requests.get(f"{demo.url}/demo", timeout=10)  # without the slash: redirected to /demo/
    assert page.status_code == 200
    assert page.url == f"{demo.url}/demo/"
    assert page.headers["Content-Type"].startswith("text/html")
    assert page.headers["Cache-Control"] == "no-cache"
    assert page.headers["Referrer-Policy"] == "no-referrer"
    asset = requests.get(f"{demo.url}/demo/assets/index-abc123.js", timeout=10)
    assert asset.status_code == 200
    assert "immutable" in asset.headers["Cache-Control"]
    for outside in ("/demo/../secret.txt", "/demo/%2e%2e/secret.txt", "/demo/missing.js"):
        answer = requests.get(f"{demo.url}{outside}", timeout=10)
        assert answer.status_code == 404, outside
        assert "not part of the bundle" not in answer.text


def test_broker_dev_serves_this_checkouts_bundle() -> None:
    assert DEMO_BUNDLE == WEB_DIST
