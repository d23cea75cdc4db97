"""The CLI's own errors (what the user typed), under one root; ``loom.cli.main`` prints any
``LoomError`` as one line with its exit code."""

from __future__ import annotations

from loom.errors import LoomError


class CliError(LoomError):
    """The root of the CLI's own errors."""


class InputError(CliError):
    """A file given on the command line is unreadable or malformed."""


class UsageError(CliError):
    """Flags that do not go together (exit code 2, as argparse's own usage errors)."""

    exit_code = 2
