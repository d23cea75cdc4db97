"""A real headless browser for UI tests: Debian's chromium driven by Playwright (the Python
package), never a downloaded browser; and a small PNG reader to tell a blank page from a
drawn one without an imaging library.

``browser_missing()`` says why the browser tests cannot run here (None when they can);
``launch(tmp)`` starts chromium with a fresh profile and no background traffic (no update
checks, no sync, no first-run pages), as a persistent context on ``tmp``.
"""

from __future__ import annotations

import importlib.util
import struct
import zlib
from collections import Counter
from pathlib import Path
from typing import Any

CHROMIUM = Path("/usr/bin/chromium")
ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
    "--no-first-run",
]


def browser_missing() -> str | None:
    if importlib.util.find_spec("playwright") is None:
        return (
            "the playwright package is not installed (pip install playwright; no browser download)"
        )
    if not CHROMIUM.exists():
        return f"no system chromium at {CHROMIUM} (apt-get install chromium)"
    return None


class Browser:
    """One Playwright driver and one chromium context, for a whole test module."""

    def __init__(self, profile: Path) -> None:
        from playwright.sync_api import sync_playwright

        self._pw = sync_playwright().start()
        try:
            self.context: Any = self._pw.chromium.launch_persistent_context(
                str(profile),
                executable_path=str(CHROMIUM),
                args=ARGS,
                headless=True,
                viewport={"width": 1280, "height": 800},
            )
        except BaseException:
            self._pw.stop()
            raise
        self.errors: list[str] = []

    def page(self) -> Any:
        page = self.context.new_page()
        page.on("pageerror", lambda exc: self.errors.append(str(exc)))
        return page

    def close(self) -> None:
        try:
            self.context.close()
        finally:
            self._pw.stop()


# -- PNG, just enough for Chromium's screenshots (8-bit RGB/RGBA, not interlaced) -------------


def png_pixels(data: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the rows of pixels (each pixel ``channels`` bytes) of a PNG."""
    assert data[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat = 8, b""
    width = height = channels = 0
    while pos < len(data):
        (length,) = struct.unpack(">I", data[pos : pos + 4])
        kind, body = data[pos + 4 : pos + 8], data[pos + 8 : pos + 8 + length]
        pos += 12 + length
        if kind == b"IHDR":
            width, height, depth, color, _, _, interlace = struct.unpack(">IIBBBBB", body)
            assert depth == 8 and color in (2, 6) and not interlace, "unexpected PNG format"
            channels = 3 if color == 2 else 4
        elif kind == b"IDAT":
            idat += body
    raw = zlib.decompress(idat)
    stride = width * channels
    rows: list[bytes] = []
    prev = bytearray(stride)
    for y in range(height):
        start = y * (stride + 1)
        kind, line = raw[start], bytearray(raw[start + 1 : start + 1 + stride])
        for i in range(stride):
            left = line[i - channels] if i >= channels else 0
            up = prev[i]
            corner = prev[i - channels] if i >= channels else 0
            if kind == 1:
                line[i] = (line[i] + left) & 0xFF
            elif kind == 2:
                line[i] = (line[i] + up) & 0xFF
            elif kind == 3:
                line[i] = (line[i] + (left + up) // 2) & 0xFF
            elif kind == 4:
                p = left + up - corner
                pa, pb, pc = abs(p - left), abs(p - up), abs(p - corner)
                pred = left if pa <= pb and pa <= pc else (up if pb <= pc else corner)
                line[i] = (line[i] + pred) & 0xFF
        rows.append(bytes(line))
        prev = line
    return width, height, [bytes(r) for r in rows]


def drawn_fraction(png: bytes, top: int = 0) -> float:
    """The fraction of pixels below row ``top`` that differ from the most common colour:
    about 0 for a blank page (background only), a few percent for any drawn content."""
    width, _, rows = png_pixels(png)
    channels = len(rows[0]) // width
    pixels = Counter(
        row[x : x + channels] for row in rows[top:] for x in range(0, len(row), channels)
    )
    total = sum(pixels.values())
    return 1 - pixels.most_common(1)[0][1] / total if total else 0.0
