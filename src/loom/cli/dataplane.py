"""CLI for this area; filled in by the issue that builds it."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loom.cli import Commands


def register(commands: Commands) -> None:
    """Nothing registered yet."""
