"""Which proxies hold an xDS stream now, and what each has been sent and has acknowledged.

The xDS server (a layer above) owns the streams; the HTTP API (another layer above) shows
them (``GET /v1/loom/proxies``: ``loom proxy status``, ``loom wait proxy``). This board on
``State`` is where the two meet without knowing each other: a stream registers a callable
that describes it when asked, and removes it when it ends. Nothing is computed until someone
asks, so a proxy's stream pays nothing for being observable.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

Status = dict[str, Any]
"""One stream's description (the JSON of ``GET /v1/loom/proxies``; see ``docs``)."""


class ProxyStreams:
    """The live xDS streams, by stream number, each described on demand."""

    def __init__(self) -> None:
        self._live: dict[int, Callable[[], Status]] = {}

    def add(self, stream: int, describe: Callable[[], Status]) -> None:
        self._live[stream] = describe

    def remove(self, stream: int) -> None:
        self._live.pop(stream, None)

    def statuses(self) -> list[Status]:
        """Every stream's status, ordered by proxy ID, then by stream (oldest first)."""
        out = [(describe(), stream) for stream, describe in list(self._live.items())]
        return [s for s, _ in sorted(out, key=lambda x: (str(x[0].get("ID", "")), x[1]))]
