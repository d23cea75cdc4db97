"""Loom's smart DNS proxy (Istio-style): mesh names answered in the pod, the rest forwarded.

Layers, pure first: ``table`` (the name table and its index) -> ``resolve`` (what a query
means) -> ``wire`` (bytes) -> ``cache`` (forwarded answers) -> ``handler`` (one packet in, one
decision out); I/O: ``forward`` (upstream resolvers), ``server`` (sockets), ``watch`` (tables
from the server or a file). See docs/dns.md.

The names below are loaded on first use (PEP 562), not when the package is: importing
``loom.dns.settings`` or ``loom.dns.errors`` (what the CLI's parser needs) must not load
dnspython and the proxy.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from loom.dns.errors import BindError, DnsError, ResolvConfError, TableError
    from loom.dns.server import DnsProxy
    from loom.dns.settings import DnsSettings
    from loom.dns.table import Instance, NameTable, Service
    from loom.dns.watch import load_table_file, watch_table, watch_table_file
    from loom.domain.mesh import ExternalHost

_HOMES = {
    "BindError": "loom.dns.errors",
    "DnsError": "loom.dns.errors",
    "ResolvConfError": "loom.dns.errors",
    "TableError": "loom.dns.errors",
    "DnsProxy": "loom.dns.server",
    "DnsSettings": "loom.dns.settings",
    "Instance": "loom.dns.table",
    "NameTable": "loom.dns.table",
    "Service": "loom.dns.table",
    "load_table_file": "loom.dns.watch",
    "watch_table": "loom.dns.watch",
    "watch_table_file": "loom.dns.watch",
    "ExternalHost": "loom.domain.mesh",
}

__all__ = [
    "BindError",
    "DnsError",
    "DnsProxy",
    "DnsSettings",
    "ExternalHost",
    "Instance",
    "NameTable",
    "ResolvConfError",
    "Service",
    "TableError",
    "load_table_file",
    "watch_table",
    "watch_table_file",
]


def __getattr__(name: str) -> object:
    home = _HOMES.get(name)
    if home is None:
        raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
    value = getattr(importlib.import_module(home), name)
    globals()[name] = value
    return value
