"""Files the CLI reads: service definitions and config entries in JSON, YAML or HCL.

Consul users write HCL (``service { name = "web" port = 80 }``, ``Kind = "service-defaults"``);
python-hcl2 (a maintained parser from PyPI) reads it, and ``_from_hcl`` turns its output into
the JSON shape the API takes: a block (``service { ... }``) is an object, not the one-item list
HCL2's data model makes of it, except under keys that hold lists (``services``, ``checks``,
``upstreams``, ...), where repeated blocks are the items. A file named ``*.hcl`` is read as
HCL only; any other is tried as JSON, then YAML (when that gives an object or a list), then HCL.

Service definitions are checked for unknown keys here, before anything is sent
(``loom.domain.definitions``): the message and the did-you-mean are ``config write``'s.
The parsers are imported on first use: every command's parser imports this module.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

from loom.cli.errors import InputError

LIST_KEYS = frozenset(
    ("services", "checks", "upstreams", "paths", "sources", "routes", "splits", "permissions",
     "hosts", "ports", "items")
)  # fmt: skip
"""Keys (lowercase, no underscores) whose repeated HCL blocks are list items, one or many."""


def read_text(path: str) -> str:
    """A file's text, or stdin's when path is '-'; ``InputError`` naming it otherwise."""
    try:
        return sys.stdin.read() if path == "-" else Path(path).read_text()
    except OSError as exc:
        raise InputError(f"cannot read {path}: {exc.strerror or exc}") from exc
    except UnicodeDecodeError as exc:
        raise InputError(f"cannot read {path}: not UTF-8 text") from exc


def read_document(path: str) -> Any:
    """JSON, YAML or HCL from a file, or from stdin when path is '-'."""
    text = read_text(path)
    if path.endswith(".hcl"):
        return parse_hcl(text, path)
    try:
        return json.loads(text)
    except json.JSONDecodeError:
        pass
    import yaml  # here, not at the top: `loom --help` must not load it

    yaml_error = ""
    try:
        doc = yaml.safe_load(text)
        if isinstance(doc, dict | list):
            return doc
    except yaml.YAMLError as exc:
        yaml_error = str(exc).splitlines()[0]
    try:
        return parse_hcl(text, path)
    except HclError as exc:
        why = f"YAML: {yaml_error}; " if yaml_error else ""
        raise InputError(f"{path}: neither JSON, YAML nor HCL ({why}{exc.reason})") from exc


class HclError(InputError):
    """A file that is not HCL; ``reason`` is the parser's first line, with line and column."""

    def __init__(self, path: str, reason: str) -> None:
        self.reason = reason
        super().__init__(f"{path}: not valid HCL: {reason}")


def parse_hcl(text: str, path: str) -> Any:
    """HCL text as the API's JSON shape (see the module docstring)."""
    import hcl2
    from lark.exceptions import LarkError

    options = hcl2.SerializationOptions(
        with_comments=False, explicit_blocks=True, strip_string_quotes=True,
        preserve_heredocs=False,
    )  # fmt: skip
    try:
        raw = hcl2.loads(text, serialization_options=options)
    except (LarkError, ValueError) as exc:
        raise HclError(path, str(exc).strip().splitlines()[0]) from exc
    return _from_hcl(raw, "")


def _from_hcl(value: Any, key: str) -> Any:
    if isinstance(value, dict):
        return {k: _from_hcl(v, k) for k, v in value.items() if k != "__is_block__"}
    if isinstance(value, list):
        items = [_from_hcl(v, key) for v in value]
        blocks = bool(value) and all(isinstance(v, dict) and v.get("__is_block__") for v in value)
        if blocks and len(items) == 1 and key.replace("_", "").lower() not in LIST_KEYS:
            return items[0]
        return items
    return value


def service_definitions(doc: Any, path: str) -> list[dict[str, Any]]:
    """Consul service definition files: {"service": {...}}, {"services": [...]} or bare; each
    checked for unknown keys (``InputError`` naming the first, with a did-you-mean)."""
    from loom.domain.definitions import SERVICE, check_keys
    from loom.domain.fields import ValidationError

    if not isinstance(doc, dict):
        raise InputError(f"{path}: expected a service definition object")
    wrapped = {k.lower(): v for k, v in doc.items() if k.lower() in ("service", "services")}
    if isinstance(wrapped.get("service"), dict) or "services" in wrapped:
        for key in doc:
            if key.lower() not in wrapped:
                raise InputError(f"{path}: {key}: unknown field (expected service or services)")
        defs, where = [], []
        if "service" in wrapped:
            defs, where = [wrapped["service"]], ["service"]
        listed = wrapped.get("services", [])
        listed = listed if isinstance(listed, list) else [listed]
        defs += listed
        where += [f"services[{i}]" for i in range(len(listed))]
    else:
        defs, where = [doc], [""]
    for d, at in zip(defs, where, strict=True):
        if not isinstance(d, dict):
            raise InputError(f"{path}: {at or 'the file'}: expected a service definition object")
        try:
            check_keys(d, SERVICE, at)
        except ValidationError as exc:
            raise InputError(f"{path}: {exc}") from exc
    return defs
