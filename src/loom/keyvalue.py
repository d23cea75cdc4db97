"""``KEY=VALUE`` command-line flags (labels, annotations) as a dict."""

from __future__ import annotations

from collections.abc import Iterable

from loom.errors import LoomError


class KeyValueError(LoomError):
    """A flag that is not KEY=VALUE."""

    exit_code = 2


def parse_key_values(items: Iterable[str], flag: str) -> dict[str, str]:
    out = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise KeyValueError(f"{flag} {item!r}: expected KEY=VALUE")
        out[key] = value
    return out
