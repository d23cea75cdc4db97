"""Errors of the application core; the HTTP layer maps each to a status code."""

from loom.errors import LoomError


class ControlError(LoomError):
    """Root of the errors the application core raises on purpose."""


class NotFound(ControlError):
    """The named object does not exist (HTTP 404)."""


class Conflict(ControlError):
    """The write conflicts with current state (HTTP 409)."""
