"""``ServerError``, the root of the errors of ``loom.server`` (start-up: ports, TLS files)."""

from __future__ import annotations

from loom.errors import LoomError


class ServerError(LoomError):
    """The server could not start (port taken, bad data dir, unreadable TLS files...)."""
