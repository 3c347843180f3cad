"""`broker queues`, `broker failed …`: inspecting and repairing the job queues."""

from __future__ import annotations

import click


def register_ops_commands(main: click.Group) -> None:
    """Attach the ops commands to the `broker` group."""
