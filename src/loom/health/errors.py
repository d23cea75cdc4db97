"""The root exception of ``loom.health``."""

from __future__ import annotations

from loom.errors import LoomError


class HealthError(LoomError):
    """A check runner could not do its work (not a check's result: those are statuses)."""
