"""The errors of ``loom local``: one root, ``LocalError``, and what went wrong under it.

Every error the ``loom local`` commands can meet is one of these, so the CLI (and the demo)
catch one class and print one line. Errors of the packages the local mesh builds on are
wrapped where it calls them (``raise ... from exc``), keeping their message::

    LocalError              the local mesh could not do what was asked (nothing half-made left)
    ├── WorkloadError       a ``loom local run`` flag that does not make a workload (exit 2)
    ├── WorkloadRefused     the injector refused the pod's annotations (wraps ``InjectError``)
    ├── ManifestError       ``loom local apply -f``: an object of the manifests cannot be run
    │                       (unknown kind, unmapped image, missing ServiceAccount...)
    ├── LocalNetError       namespaces, bridge, addresses or the network state file
    ├── LocalServerError    the local server is unreachable or refused a request
    │                       (wraps the API client's ``ClientError``)
    ├── LocalRedirectError  the pod's traffic redirection was not installed (wraps
    │                       ``RedirectError``)
    ├── LocalProcessError   a process (server, node DNS, sidecar, app) could not be started
    │                       (wraps ``OSError``)
    └── LocalStateError     a file of the state directory could not be read or written
                            (wraps ``OSError``)
"""

from __future__ import annotations

import contextlib
from collections.abc import Iterator

from loom.errors import LoomError


class LocalError(LoomError):
    """The local mesh could not do what was asked; nothing half-made is left."""


class WorkloadError(LocalError):
    """A ``loom local run`` flag that does not make a workload."""

    exit_code = 2


class WorkloadRefused(LocalError):
    """The injection planner refused the workload (its message names the annotation)."""


class ManifestError(LocalError):
    """A manifest given to ``loom local apply``/``delete`` cannot be run; nothing was made."""


class LocalNetError(LocalError):
    """The local mesh's namespaces could not be made or removed (or a name was refused)."""


class LocalServerError(LocalError):
    """The local server could not be reached, or refused a request."""


class LocalRedirectError(LocalError):
    """A pod's transparent-proxy rules could not be installed."""


class LocalProcessError(LocalError):
    """A process of the local mesh could not be started."""


class LocalStateError(LocalError):
    """A file of the local mesh's state directory could not be read or written."""


@contextlib.contextmanager
def state_io(what: str) -> Iterator[None]:
    """Turn an ``OSError`` of the block into a ``LocalStateError`` saying ``what`` failed."""
    try:
        yield
    except OSError as exc:
        where = f" ({exc.filename})" if exc.filename else ""
        raise LocalStateError(f"{what}: {exc.strerror or exc}{where}") from exc
