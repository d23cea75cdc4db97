"""Typed reading of untrusted JSON objects, with errors that name the offending field.

``Fields(obj, "Service")`` wraps a dict; ``.text("Name")`` etc. return typed values or raise
``ValidationError("Service.Name: expected a string, got 12")``. Every API input goes through
this, so a bad request is rejected as a whole before anything is written.
"""

from __future__ import annotations

import difflib
import ipaddress
import json
import re
from collections.abc import Iterable
from typing import Any

from loom.errors import LoomError

SERVICE_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9_-]{0,61}[A-Za-z0-9])?$")
LENIENT_NAME = re.compile(r"^[A-Za-z0-9]([A-Za-z0-9._-]{0,126}[A-Za-z0-9])?$")
"""A service name Consul's leniency accepts here (``api.v1``): up to 128 letters, digits,
``.``, ``-`` and ``_``, alphanumeric at both ends, no ``..``. Only a catalog-only service may
have one that ``SERVICE_NAME`` refuses (see the name-leniency note in docs/architecture.md)."""
DNS_SAFE = re.compile(r"^[A-Za-z0-9-]+$")
"""Consul's DNS-valid characters: a name with others is "not discoverable via DNS"."""
SERVICE_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}$")
NAMESPACE = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
DATACENTER = re.compile(r"^[a-z0-9_-]{1,64}$")
"""What a datacenter name may be (it is a segment of SPIFFE IDs and a label of SNIs)."""


class ValidationError(LoomError):
    """API input that does not fit; the message names the field. Maps to HTTP 400."""


MAX_JSON_DEPTH = 64
"""Deepest nesting of arrays and objects accepted in a request body (Consul's bodies need 6)."""


def check_json_text(value: Any, where: str = "body") -> None:
    """Refuse what JSON can carry but the mesh cannot store or name: lone UTF-16 surrogates
    (``"\\ud800"`` decodes to a str that cannot be encoded as UTF-8) and nesting deeper than
    ``MAX_JSON_DEPTH``. The error names the first offending place (``body.Check.CheckID``).
    Iterative, so hostile depth cannot exhaust the interpreter's stack."""
    stack: list[tuple[Any, str, int]] = [(value, where, 0)]
    while stack:
        item, path, depth = stack.pop()
        if isinstance(item, str):
            if not _is_utf8(item):
                raise ValidationError(
                    f"{path}: contains a lone UTF-16 surrogate, which is not text"
                )
            continue
        if not isinstance(item, dict | list):
            continue
        if depth >= MAX_JSON_DEPTH:
            raise ValidationError(f"{path}: nested deeper than {MAX_JSON_DEPTH} levels")
        if isinstance(item, dict):
            for key, sub in item.items():
                if not _is_utf8(key):
                    raise ValidationError(
                        f"{path}: a key contains a lone UTF-16 surrogate, which is not text"
                    )
                stack.append((sub, f"{path}.{key}", depth + 1))
        else:
            stack.extend((sub, f"{path}[{n}]", depth + 1) for n, sub in enumerate(item))


_MAYBE_SURROGATE = re.compile(rb"\\[uU][dD][89a-fA-F]|\xed")
"""Where a decoded body can hold a lone surrogate: a ``\\udXXX`` escape, or the UTF-8 lead
byte 0xED (``json.loads`` decodes bytes with ``surrogatepass``). Also matches harmless text
(an escaped backslash before ``ud8``, Hangul): such a body just takes the full check."""
_UTF8 = ("utf-8", "utf-8-sig")


def _maybe_surrogate(raw: bytes) -> bool:
    """``_MAYBE_SURROGATE`` matches ``raw``; a substring search first (the pattern, without a
    literal to skip ahead to, reads a body several times slower, and most bodies hold
    neither a ``\\u`` escape nor the byte 0xED)."""
    if b"\xed" not in raw and b"\\u" not in raw and b"\\U" not in raw:
        return False
    return _MAYBE_SURROGATE.search(raw) is not None


def check_json_body(raw: bytes, value: Any, where: str = "body") -> None:
    """``check_json_text(value, where)`` for ``value = json.loads(raw)``, fast when ``raw``
    cannot hold a lone surrogate: then only the nesting is walked (containers only, no path
    strings). Anything suspect (a UTF-16 or UTF-32 body, which ``json.loads`` also reads),
    or too deep, gets the full check, which names the place."""
    if (
        json.detect_encoding(raw) in _UTF8
        and not _maybe_surrogate(raw)
        # Nesting past the limit needs more opening brackets than that in the text.
        and (
            raw.count(b"{") + raw.count(b"[") <= MAX_JSON_DEPTH
            or _depth_within(value, MAX_JSON_DEPTH)
        )
    ):
        return
    check_json_text(value, where)


def check_json_depth(raw: bytes, value: Any, where: str = "body") -> None:
    """``check_json_body`` for a body read by a strict reader (msgspec): it takes UTF-8 only
    and refuses every lone surrogate, so only the nesting is left to check."""
    if raw.count(b"{") + raw.count(b"[") <= MAX_JSON_DEPTH or _depth_within(value, MAX_JSON_DEPTH):
        return
    check_json_text(value, where)


def _depth_within(value: Any, limit: int) -> bool:
    """No container of ``value`` nests ``limit`` levels deep (as ``check_json_text`` counts)."""
    if type(value) is not dict and type(value) is not list:
        return True
    stack: list[tuple[Any, int]] = [(value, 0)]
    while stack:
        item, depth = stack.pop()
        if depth >= limit:
            return False
        for sub in item.values() if type(item) is dict else item:
            if type(sub) is dict or type(sub) is list:
                stack.append((sub, depth + 1))
    return True


def _is_utf8(text: str) -> bool:
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return False
    return True


def _kind(value: Any) -> str:
    text = repr(value)
    return text if len(text) <= 40 else text[:37] + "..."


def _norm(key: str) -> str:
    return key.replace("_", "").lower()


def field_key(key: str) -> str:
    """The form field names match in: case and underscores aside (``sidecar_service`` is
    ``SidecarService``)."""
    return _norm(key)


class Fields:
    """A JSON object being read; ``path`` prefixes every error message.

    Field names match as Consul's decoder matches them: exactly, else case-insensitively and
    ignoring underscores (``sidecar_service`` is ``SidecarService``), which is what clients
    such as py-consul send. Keys of user maps (Meta, Config) are never rewritten.
    """

    def __init__(self, obj: Any, path: str) -> None:
        if not isinstance(obj, dict):
            raise ValidationError(f"{path}: expected an object, got {_kind(obj)}")
        self.obj: dict[str, Any] = obj
        self.path = path
        self._aliases = {_norm(k): k for k in obj if isinstance(k, str)}

    def _get(self, key: str) -> Any:
        if key in self.obj:
            return self.obj[key]
        alias = self._aliases.get(_norm(key))
        return None if alias is None else self.obj[alias]

    def where(self, key: str) -> str:
        return f"{self.path}.{key}" if self.path else key

    def has(self, key: str) -> bool:
        return self._get(key) is not None

    def raw(self, key: str) -> Any:
        return self._get(key)

    def text(self, key: str, default: str = "", required: bool = False) -> str:
        value = self._get(key)
        if value is None:
            if required:
                raise ValidationError(f"{self.where(key)}: is required")
            return default
        if not isinstance(value, str):
            raise ValidationError(f"{self.where(key)}: expected a string, got {_kind(value)}")
        if required and not value:
            raise ValidationError(f"{self.where(key)}: must not be empty")
        return value

    def integer(
        self, key: str, default: int = 0, lo: int | None = None, hi: int | None = None
    ) -> int:
        value = self._get(key)
        if value is None:
            return default
        if isinstance(value, bool) or not isinstance(value, int):
            raise ValidationError(f"{self.where(key)}: expected an integer, got {_kind(value)}")
        if (lo is not None and value < lo) or (hi is not None and value > hi):
            raise ValidationError(f"{self.where(key)}: {value} is outside {lo}..{hi}")
        return value

    def port(self, key: str, default: int = 0) -> int:
        return self.integer(key, default, 0, 65535)

    def flag(self, key: str, default: bool = False) -> bool:
        value = self._get(key)
        if value is None:
            return default
        if not isinstance(value, bool):
            raise ValidationError(f"{self.where(key)}: expected true or false, got {_kind(value)}")
        return value

    def strs(self, key: str) -> list[str]:
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise ValidationError(f"{self.where(key)}: expected a list of strings")
        return list(value)

    def str_map(self, key: str) -> dict[str, str]:
        value = self._get(key)
        if value is None:
            return {}
        if not isinstance(value, dict) or not all(isinstance(v, str) for v in value.values()):
            raise ValidationError(f"{self.where(key)}: expected an object of strings")
        return dict(value)

    def any_map(self, key: str) -> dict[str, Any]:
        value = self._get(key)
        if value is None:
            return {}
        if not isinstance(value, dict):
            raise ValidationError(f"{self.where(key)}: expected an object, got {_kind(value)}")
        return dict(value)

    def sub(self, key: str) -> Fields | None:
        value = self._get(key)
        return None if value is None else Fields(value, self.where(key))

    def subs(self, key: str) -> list[Fields]:
        value = self._get(key)
        if value is None:
            return []
        if not isinstance(value, list):
            raise ValidationError(f"{self.where(key)}: expected a list, got {_kind(value)}")
        return [Fields(v, f"{self.where(key)}[{i}]") for i, v in enumerate(value)]

    def one_of(self, key: str, choices: Iterable[str], default: str = "") -> str:
        value = self.text(key, default)
        allowed = tuple(choices)
        if value not in allowed:
            shown = ", ".join(repr(c) for c in allowed if c)
            raise ValidationError(f"{self.where(key)}: {value!r} is not one of {shown}")
        return value

    def only(self, known: Iterable[str]) -> None:
        """Reject keys outside ``known`` (config entries are strict, as Consul's are)."""
        problem = first_unknown(self.obj, known)
        if problem is not None:
            raise ValidationError(f"{self.where(problem[0])}: {problem[1]}")


def first_unknown(
    obj: dict[str, Any], known: Iterable[str], fold: bool = True
) -> tuple[str, str] | None:
    """The first key of ``obj`` outside ``known`` and what to say of it: ``unknown field``,
    with the nearest known name when one is close (``unknown field (did you mean
    'Protocol'?)``); None when all are known. Keys match as ``Fields`` matches them (case and
    underscores aside), or exactly with ``fold=False`` (readers that look keys up as written).
    The one check behind every strict reading: config entries, service definitions, the DNS
    proxy's name table."""
    names = list(known)
    by_norm = {_norm(k): k for k in names}
    exact = set(names)
    for key in obj:
        if (_norm(key) in by_norm) if fold else (key in exact):
            continue
        near = difflib.get_close_matches(_norm(key), list(by_norm), n=1, cutoff=0.6)
        hint = f" (did you mean {by_norm[near[0]]!r}?)" if near else ""
        return key, f"unknown field{hint}"
    return None


def check_name(value: str, where: str, wildcard: bool = False) -> str:
    if wildcard and value == "*":
        return value
    if not SERVICE_NAME.fullmatch(value):  # fullmatch: "$" would let a trailing newline in
        raise ValidationError(
            f"{where}: {value!r} is not a valid name (letters, digits, '-' and '_', 1-63 chars)"
        )
    return value


def check_lenient_name(value: str, where: str) -> str:
    """A service name by Consul's leniency (``LENIENT_NAME``): ``api.v1`` passes; ``/``,
    ``..``, NUL, spaces, non-ASCII and names over 128 characters do not."""
    if not LENIENT_NAME.fullmatch(value) or ".." in value:
        raise ValidationError(
            f"{where}: {value!r} is not a valid name (letters, digits, '.', '-' and '_', "
            "1-128 chars, starting and ending with a letter or digit)"
        )
    return value


def is_mesh_name(value: str) -> bool:
    """The name can be a DNS label, an SNI label and a SPIFFE segment (``SERVICE_NAME``)."""
    return SERVICE_NAME.fullmatch(value) is not None


def refuse_in_mesh(name: str, use: str, where: str) -> None:
    """Refuse a name that is no DNS label (``api.v1``) for ``use`` (empty: not in the mesh,
    allowed): a mesh service's name is a label of the SNI ``<svc>.<ns>.<dc>.internal.<trust
    domain>`` that sidecars and mesh gateways split on dots, where ``api.v1`` would read as
    service ``api`` of namespace ``v1``. Only catalog-only services get Consul's leniency."""
    if use and not is_mesh_name(name):
        raise ValidationError(
            f"{where}: {name!r} cannot name {use}: a service in the mesh needs a name that is "
            "a DNS label (letters, digits, '-' and '_', 1-63 chars), as it is a label of its "
            "SNI; only a service outside the mesh may have a name like this"
        )


def dns_name_warning(name: str) -> str | None:
    """Consul's warning for a service name its DNS will not serve, or None."""
    if not DNS_SAFE.fullmatch(name):
        return (
            f"Service name {name!r} will not be discoverable via DNS due to invalid "
            "characters. Valid characters include all alpha-numerics and dashes."
        )
    if len(name) > 63:
        return (
            f"Service name {name!r} will not be discoverable via DNS due to it being too "
            "long. Valid lengths are between 1 and 63 bytes."
        )
    return None


def check_namespace(value: str, where: str, wildcard: bool = False) -> str:
    if wildcard and value == "*":
        return value
    if not NAMESPACE.match(value):
        raise ValidationError(f"{where}: {value!r} is not a valid namespace (a DNS label)")
    return value


def check_datacenter(value: str, where: str) -> str:
    if not DATACENTER.match(value):
        raise ValidationError(
            f"{where}: {value!r} is not a datacenter name (lowercase letters, digits, '-', '_')"
        )
    return value


def check_id(value: str, where: str) -> str:
    if not SERVICE_ID.match(value):
        raise ValidationError(f"{where}: {value!r} is not a valid ID")
    return value


def check_address(value: str, where: str) -> str:
    """An IP address or a host name; empty is allowed (means the node's address)."""
    if not value:
        return value
    try:
        ipaddress.ip_address(value)
    except ValueError:
        if not re.match(r"^[A-Za-z0-9.-]{1,253}$", value):
            raise ValidationError(f"{where}: {value!r} is not an IP address or host name") from None
    return value


def check_cidr(value: str, where: str) -> str:
    try:
        ipaddress.ip_network(value, strict=False)
    except ValueError:
        raise ValidationError(f"{where}: {value!r} is not an IP address or CIDR") from None
    return value


def parse_duration(value: str, where: str) -> float:
    """Go-style durations as Consul takes them: '10s', '1m30s', '500ms', '72h'."""
    units = {"ns": 1e-9, "us": 1e-6, "µs": 1e-6, "ms": 1e-3, "s": 1.0, "m": 60.0, "h": 3600.0}
    parts = re.findall(r"(\d+(?:\.\d+)?)(ns|us|µs|ms|s|m|h)", value)
    if not value or "".join(n + u for n, u in parts) != value:
        raise ValidationError(f"{where}: {value!r} is not a duration like '10s' or '1m30s'")
    return sum(float(n) * units[u] for n, u in parts)
