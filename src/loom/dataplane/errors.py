"""The dataplane package's exception root, and the Envoy process's errors under it."""

from __future__ import annotations

from loom.errors import LoomError


class DataplaneError(LoomError):
    """The dataplane cannot run (Envoy cannot start, bad settings)."""


class EnvoyError(DataplaneError):
    """Envoy could not be found, started or made ready."""
