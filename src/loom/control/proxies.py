"""Which proxies hold an xDS stream now, and what each has been sent and has acknowledged.

The xDS server (a layer above) owns the streams; the HTTP API (another layer above) shows
them (``GET /v1/loom/proxies``: ``loom proxy status``, ``loom wait proxy``). This board on
``State`` is where the two meet without knowing each other: a stream registers a callable
that describes it when asked, and removes it when it ends. Nothing is computed until someone
asks, so a proxy's stream pays nothing for being observable.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

Status = dict[str, Any]
"""One stream's description (the JSON of ``GET /v1/loom/proxies``; see ``docs``)."""


class ProxyStreams:
    """The live xDS streams, by stream number, each described on demand; and, per proxy ID,
    since when it has had none (``gone_for``: its checks' runner, its dataplane, is gone)."""

    def __init__(self, clock: Callable[[], float] = time.monotonic) -> None:
        self._live: dict[int, Callable[[], Status]] = {}
        self._clock = clock
        self._ids: dict[int, str] = {}  # stream -> proxy ID
        self._streams: dict[str, int] = {}  # proxy ID -> live streams
        self._ended: dict[str, float] = {}  # proxy ID -> when its last stream ended
        self._started = clock()

    def add(self, stream: int, describe: Callable[[], Status], proxy_id: str = "") -> None:
        self._live[stream] = describe
        if proxy_id and stream not in self._ids:
            self._ids[stream] = proxy_id
            self._streams[proxy_id] = self._streams.get(proxy_id, 0) + 1
            self._ended.pop(proxy_id, None)

    def remove(self, stream: int) -> None:
        self._live.pop(stream, None)
        proxy_id = self._ids.pop(stream, None)
        if proxy_id is None:
            return
        left = self._streams[proxy_id] - 1
        if left:
            self._streams[proxy_id] = left
        else:
            del self._streams[proxy_id]
            self._ended[proxy_id] = self._clock()

    def gone_for(self, proxy_id: str) -> float | None:
        """Seconds since ``proxy_id`` last had a stream here (since this board was made if it
        never had one); None while it has one."""
        if proxy_id in self._streams:
            return None
        return self._clock() - self._ended.get(proxy_id, self._started)

    def statuses(self) -> list[Status]:
        """Every stream's status, ordered by proxy ID, then by stream (oldest first)."""
        out = [(describe(), stream) for stream, describe in list(self._live.items())]
        return [s for s, _ in sorted(out, key=lambda x: (str(x[0].get("ID", "")), x[1]))]
