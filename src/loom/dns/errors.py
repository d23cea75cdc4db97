"""The exceptions of the DNS proxy, drawn in one place.

    LoomError
    └── DnsError            anything the DNS proxy refuses or cannot do
        ├── TableError      a name table (JSON from the server or a --table file) is invalid
        ├── ResolvConfError a resolv.conf cannot be read
        └── BindError       the listen address cannot be bound (port taken, no permission)

Each message is one line naming what was wrong (the JSON field, the file, the address), so the
CLI can print it as is. Third-party errors (OSError, json, aiohttp) are wrapped where they occur.
Malformed DNS packets are not exceptions at this level: the packet handler answers them with
FORMERR or drops them, and never raises.
"""

from __future__ import annotations

from loom.errors import LoomError


class DnsError(LoomError):
    """Root of the DNS proxy's deliberate errors."""


class TableError(DnsError):
    """A name table is invalid; the message names the offending field."""


class ResolvConfError(DnsError):
    """A resolv.conf file cannot be read."""


class BindError(DnsError):
    """The proxy cannot listen on the address it was given."""
