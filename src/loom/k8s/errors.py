"""Errors of the Kubernetes adapters (webhook, manifests, connect-init, install).

``K8sError`` is the package root. ``ManifestError`` is input ``loom inject`` cannot read or a
workload the planner refused (the message names the object, then the annotation and value).
``ConnectInitError`` is connect-init giving up (timeout, server unreachable, redirect failed).
``AclInitError`` is ``loom k8s acl-init`` unable to read its Secrets or write a record.
"""

from __future__ import annotations

from loom.errors import LoomError


class K8sError(LoomError):
    """Root of the errors raised by ``loom.k8s``."""


class ManifestError(K8sError):
    """Manifests that cannot be read, or a workload in them that cannot be injected."""


class ConnectInitError(K8sError):
    """connect-init could not complete: the message says what it waited for and why."""


class AclInitError(K8sError):
    """An ACL record of the installation could not be read or written."""
