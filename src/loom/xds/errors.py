"""The xDS package's exception tree, drawn in one place::

    XdsError                  anything xDS raises
    ├── XdsStartError         the gRPC server could not listen
    ├── StreamDenied          the stream's ACL token may not have this proxy's configuration
    ├── InconsistentSnapshot  generated resources reference what the snapshot lacks (a bug)
    └── ResourceError         a generated resource does not fit Envoy's schema (a bug)

Pure: the translators raise from here without importing the server.
"""

from __future__ import annotations

from loom.errors import LoomError


class XdsError(LoomError):
    """The root of the xDS package's errors."""


class XdsStartError(XdsError):
    """The xDS server could not start (address in use, bad address)."""


class StreamDenied(XdsError):
    """The stream's token is unknown or may not ``service:write`` the proxy's service; the
    text is Consul's (``ACL not found``, ``Permission denied: token with AccessorID ...``)."""


class InconsistentSnapshot(XdsError):
    """Generated resources reference something the snapshot lacks (a translator bug)."""


class ResourceError(XdsError):
    """A generated resource does not fit Envoy's schema (a translator bug)."""
