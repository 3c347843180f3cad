"""How a printed hint names `broker`: the shortest command that runs this installation from the user's shell.

A hint ("resume with: …", the `broker dev` banner) is only useful if it can be pasted as is. `broker` works when
the shell's PATH finds this very script (an activated virtualenv, or `var/dev.env`, which puts it first); else
the script's own path does; without a script (an unusual install), the interpreter running the package does.
"""

from __future__ import annotations

import os
import shlex
import shutil
import sys
from pathlib import Path


def broker_script() -> Path | None:
    """This installation's `broker` script (beside the interpreter, as pip installs it), if there is one."""
    script = Path(os.path.abspath(sys.executable)).parent / "broker"
    return script if script.is_file() and os.access(script, os.X_OK) else None


def broker_command(search_path: str | None = None) -> str:
    """`broker`, the script's path, or `<python> -m app.cli`: the first that runs this installation, given the
    shell's PATH (`search_path`; default: this process's)."""
    script = broker_script()
    if script is None:
        return f"{shlex.quote(os.path.abspath(sys.executable))} -m app.cli"
    found = shutil.which("broker", path=search_path)
    if found and Path(found).resolve() == script.resolve():
        return "broker"
    return shlex.quote(str(script))
