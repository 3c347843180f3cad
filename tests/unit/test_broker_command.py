"""A printed hint names `broker` only where the user's shell finds this installation's by that name; else its
path; and var/dev.env puts it first on PATH, so the banner's `broker …` works as printed."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

from app.broker_command import broker_command, broker_script
from app.devstack.dev_env import write_dev_env

SCRIPT = Path(os.path.abspath(sys.executable)).parent / "broker"
pytestmark = pytest.mark.skipif(not SCRIPT.is_file(), reason="no broker script beside this interpreter")


def test_by_name_when_path_finds_this_installation():
    assert broker_script() == SCRIPT
    assert broker_command(f"{SCRIPT.parent}{os.pathsep}/usr/bin") == "broker"


def test_by_its_path_when_path_does_not_find_it_or_finds_another(tmp_path: Path):
    assert broker_command("/usr/bin:/bin") == str(SCRIPT)
    other = tmp_path / "broker"
    other.write_text("#!/bin/sh\necho another broker\n")
    other.chmod(0o755)
    assert broker_command(f"{tmp_path}{os.pathsep}{SCRIPT.parent}") == str(SCRIPT)


def test_dev_env_puts_this_broker_first_on_path(tmp_path: Path):
    dev_env = write_dev_env({"BROKER_API_URL": "http://127.0.0.1:1"}, tmp_path / "dev.env")
    shell = subprocess.run(
        ["bash", "-c", f"set -a; . {dev_env}; set +a; command -v broker; echo $BROKER_API_URL"],
        env={"PATH": "/usr/bin:/bin"},
        capture_output=True,
        text=True,
        check=True,
    )
    found, api_url = shell.stdout.split()
    assert Path(found).resolve() == SCRIPT.resolve()
    assert api_url == "http://127.0.0.1:1"
