"""Errors of the server's application layer; the HTTP layer maps them to status codes."""

from loom.errors import LoomError


class NotFound(LoomError):
    """The named object does not exist (HTTP 404)."""


class Conflict(LoomError):
    """The write conflicts with current state (HTTP 409)."""
