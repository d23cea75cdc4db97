"""Loom's smart DNS proxy (Istio-style): mesh names answered in the pod, the rest forwarded.

Layers, pure first: ``table`` (the name table and its index) -> ``resolve`` (what a query
means) -> ``wire`` (bytes) -> ``cache`` (forwarded answers) -> ``handler`` (one packet in, one
decision out); I/O: ``forward`` (upstream resolvers), ``server`` (sockets), ``watch`` (tables
from the server or a file). See docs/dns.md.
"""

from loom.dns.errors import BindError, DnsError, ResolvConfError, TableError
from loom.dns.server import DnsProxy, DnsSettings
from loom.dns.table import Instance, NameTable, Service
from loom.dns.watch import load_table_file, watch_table, watch_table_file
from loom.domain.mesh import ExternalHost

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
