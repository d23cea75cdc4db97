"""What aiohttp logs about requests it refuses itself: one line each, floods summarised.

aiohttp answers a request it cannot parse (a request line over 8 KiB, a bad header, garbage
on the port) with a 400 before any handler runs, and logs it with ``logger.exception``: a
traceback per request, which is how 4,145 oversized URLs became 3.6 MB of log (issue 11).
A malformed request is the client's fault, not the server's: ``AiohttpLog`` stands in for
aiohttp's server logger (``AppRunner(logger=...)``) and writes it as one line naming the
client and the problem, through a ``RateLimitedLog`` so a flood is a handful of lines and a
summary. Anything else aiohttp reports (a bug) keeps its traceback, rate-limited too.
"""

from __future__ import annotations

import logging
import sys
from typing import Any

from aiohttp.http_exceptions import HttpProcessingError

from loom.ratelog import RateLimitedLog

MAX_DETAIL = 200
"""Characters of aiohttp's description kept in the line (it quotes part of the request)."""


def _one_line(text: str) -> str:
    flat = " ".join(text.split())
    return flat if len(flat) <= MAX_DETAIL else flat[: MAX_DETAIL - 3] + "..."


class AiohttpLog:
    """The methods aiohttp's ``RequestHandler`` calls on its logger."""

    def __init__(self, logger: logging.Logger) -> None:
        self.logger = logger
        self.limited = RateLimitedLog(logger)

    def exception(self, msg: str, *args: Any, exc_info: Any = True, **_: Any) -> None:
        exc = exc_info if isinstance(exc_info, BaseException) else sys.exc_info()[1]
        if isinstance(exc, HttpProcessingError) and 400 <= exc.code < 500:
            detail = _one_line(exc.message or type(exc).__name__)
            who = args[0] if args and msg == "Error handling request from %s" else "a client"
            self.limited.warning(
                f"http {exc.code}",
                "refused a malformed request from %s: %d %s",
                who,
                exc.code,
                detail,
            )
            return
        self.limited.error("http internal", msg, *args, exc_info=exc or exc_info)

    def error(self, msg: str, *args: Any, **kw: Any) -> None:
        self.limited.error("aiohttp error", msg, *args, exc_info=kw.get("exc_info"))

    def warning(self, msg: str, *args: Any, **_: Any) -> None:
        self.limited.warning("aiohttp warning", msg, *args)

    def info(self, msg: str, *args: Any, **_: Any) -> None:
        self.logger.info(msg, *args)

    def debug(self, msg: str, *args: Any, **_: Any) -> None:
        # Garbage on the port (TLS to the plain port...) is logged at debug by aiohttp: with
        # its traceback only when someone asked for debug.
        self.logger.debug(msg, *args)

    def isEnabledFor(self, level: int) -> bool:  # logging.Logger names it so
        return self.logger.isEnabledFor(level)


__all__ = ["AiohttpLog"]
