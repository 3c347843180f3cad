"""`broker cleanup-temp`, `broker reconcile`: the lifecycle sweeps, on demand."""

from __future__ import annotations

import click


def register_lifecycle_commands(main: click.Group) -> None:
    """Attach the lifecycle commands to the `broker` group."""
