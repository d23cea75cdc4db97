"""Strict reading of Consul-shaped JSON objects, and the time and duration formats they use.

Every ACL record arrives as a JSON object from a client. Reading one here means: every key is
a known field (or a known read-only one the client echoes back), matched without regard to
case as Go's ``encoding/json`` matches it; every value has the type the field wants; and an
error names the record and the field (``Token: field 'Policies[0].ID': expected a string``).
Times are RFC 3339 as Go prints them (up to nanoseconds, ``Z`` or an offset); durations are
Go's (``"1h30m"``, ``"-1s"``).
"""

from __future__ import annotations

import datetime as dt
import json
import re
from collections.abc import Mapping
from typing import Any

from loom.acl.errors import AclError


class RecordError(AclError):
    """A record's JSON is wrong: unknown field, wrong type, or a value Consul refuses."""


class Fields:
    """One JSON object being read; ``done()`` refuses the keys nobody asked for."""

    def __init__(
        self, record: str, doc: object, where: str = "", ignored: frozenset[str] = frozenset()
    ) -> None:
        self.record = record
        self.where = where
        if not isinstance(doc, Mapping):
            raise self.error("", "expected a JSON object")
        self.doc: Mapping[str, Any] = doc
        # Go's encoding/json matches field names case-insensitively, and clients rely on it
        # (py-consul sends "name" and "rules"); a name given twice in two cases is refused.
        self.keys: dict[str, str] = {}
        for key in doc:
            if not isinstance(key, str):
                raise self.error("", "field names must be strings")
            if key.lower() in self.keys:
                raise self.error(key, "given twice (field names are case-insensitive)")
            self.keys[key.lower()] = key
        self.seen: set[str] = {k.lower() for k in ignored}

    def error(self, field: str, message: str) -> RecordError:
        path = json.dumps(f"{self.where}{field}", ensure_ascii=False)[1:-1]  # one line, always
        return RecordError(
            f"{self.record}: field '{path}': {message}" if path else f"{self.record}: {message}"
        )

    def raw(self, field: str) -> Any:
        self.seen.add(field.lower())
        key = self.keys.get(field.lower())
        return None if key is None else self.doc[key]

    def text(self, field: str, default: str = "") -> str:
        value = self.raw(field)
        if value is None:
            return default
        if not isinstance(value, str):
            raise self.error(field, "expected a string")
        return value

    def flag(self, field: str) -> bool:
        value = self.raw(field)
        if value is None:
            return False
        if not isinstance(value, bool):
            raise self.error(field, "expected true or false")
        return value

    def strings(self, field: str) -> tuple[str, ...]:
        value = self.raw(field)
        if value is None:
            return ()
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise self.error(field, "expected a list of strings")
        return tuple(value)

    def objects(self, field: str) -> list[tuple[str, object]]:
        """``(where, object)`` for each element of a list field, ``where`` for nested errors."""
        value = self.raw(field)
        if value is None:
            return []
        if not isinstance(value, list):
            raise self.error(field, "expected a list")
        return [(f"{self.where}{field}[{i}].", item) for i, item in enumerate(value)]

    def mapping(self, field: str) -> dict[str, Any]:
        value = self.raw(field)
        if value is None:
            return {}
        if not isinstance(value, Mapping) or not all(isinstance(k, str) for k in value):
            raise self.error(field, "expected a JSON object")
        return dict(value)

    def time(self, field: str) -> dt.datetime | None:
        value = self.text(field)
        if not value:
            return None
        try:
            return parse_time(value)
        except ValueError as exc:
            raise self.error(field, str(exc)) from None

    def duration(self, field: str) -> dt.timedelta | None:
        value = self.raw(field)
        if value is None or value == "":
            return None
        if not isinstance(value, str):
            raise self.error(field, 'expected a duration string such as "1h"')
        try:
            return parse_duration(value)
        except ValueError as exc:
            raise self.error(field, str(exc)) from None

    def done(self) -> None:
        for lowered, key in self.keys.items():
            if lowered not in self.seen:
                raise self.error(key, "unknown field")


_TIME = re.compile(
    r"^(\d{4})-(\d\d)-(\d\d)[Tt](\d\d):(\d\d):(\d\d)(?:\.(\d{1,9}))?(?:([Zz])|([+-])(\d\d):(\d\d))$"
)


def parse_time(text: str) -> dt.datetime:
    """An RFC 3339 time, as an aware UTC ``datetime`` (nanoseconds truncated to micro)."""
    m = _TIME.match(text)
    if m is None:
        raise ValueError(f"{text!r} is not an RFC 3339 time")
    year, month, day, hour, minute, second = (int(m.group(i)) for i in range(1, 7))
    micro = int((m.group(7) or "0").ljust(9, "0")[:6])
    offset = dt.timedelta(0)
    if m.group(9):
        offset = dt.timedelta(hours=int(m.group(10)), minutes=int(m.group(11)))
        if m.group(9) == "-":
            offset = -offset
    try:
        local = dt.datetime(year, month, day, hour, minute, second, micro, dt.timezone(offset))
    except ValueError as exc:
        raise ValueError(f"{text!r} is not a valid time: {exc}") from None
    return local.astimezone(dt.UTC)


def format_time(when: dt.datetime) -> str:
    """Go's RFC3339Nano for a UTC time: trailing zeros of the fraction dropped."""
    when = when.astimezone(dt.UTC)
    text = when.strftime("%Y-%m-%dT%H:%M:%S")
    if when.microsecond:
        text += "." + f"{when.microsecond:06d}".rstrip("0")
    return text + "Z"


_UNITS = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
_PART = re.compile(r"(\d+(?:\.\d*)?|\.\d+)(ns|us|µs|ms|s|m|h)")


def parse_duration(text: str) -> dt.timedelta:
    """Go's ``time.ParseDuration``: ``"1h30m"``, ``"-1s"``; a bare ``"0"`` is allowed."""
    sign = -1.0 if text.startswith("-") else 1.0
    body = text[1:] if text[:1] in "+-" else text
    if body == "0":
        return dt.timedelta(0)
    at, seconds = 0, 0.0
    while at < len(body):
        m = _PART.match(body, at)
        if m is None:
            raise ValueError(f'{text!r} is not a duration such as "1h30m"')
        seconds += float(m.group(1)) * _UNITS[m.group(2)]
        at = m.end()
    if at == 0:
        raise ValueError(f'{text!r} is not a duration such as "1h30m"')
    return dt.timedelta(seconds=sign * seconds)


def format_duration(value: dt.timedelta) -> str:
    """Go's ``Duration.String`` for whole and fractional seconds (``"1h0m0s"``, ``"1.5s"``)."""
    total = value.total_seconds()
    if total == 0:
        return "0s"
    hours, rest = divmod(total, 3600)
    minutes, seconds = divmod(rest, 60)
    sec = f"{seconds:.6f}".rstrip("0").rstrip(".")
    if hours:
        return f"{int(hours)}h{int(minutes)}m{sec}s"
    if minutes:
        return f"{int(minutes)}m{sec}s"
    return f"{sec}s"
