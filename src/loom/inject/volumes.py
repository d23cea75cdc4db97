"""The shared in-memory volume between connect-init and the sidecar(s).

connect-init writes what it learned from the server (the proxy's ID, and with ACLs the token
its login got) into an ``emptyDir`` (``medium: Memory``) mounted at ``/loom/connect-inject``;
each sidecar reads its proxy ID (and token) from there. The file names are defined here once:
connect-init writes them, the sidecar's command line points at them.
"""

from __future__ import annotations

from typing import Any

from loom.inject.plan import InvalidPod

DATA_VOLUME = "loom-connect-inject-data"
"""Name of the injected emptyDir volume."""
DATA_DIR = "/loom/connect-inject"
"""Where the volume is mounted in the init and sidecar containers."""


def proxy_id_file(suffix: str = "") -> str:
    """File name (inside ``DATA_DIR``) of a service's proxy ID: ``proxyid`` or ``proxyid-web``."""
    return f"proxyid{suffix}"


def acl_token_file(suffix: str = "") -> str:
    """File name (inside ``DATA_DIR``) of a service's login token: ``acl-token[-web]``."""
    return f"acl-token{suffix}"


def data_mount() -> dict[str, Any]:
    """The volumeMount of the shared volume."""
    return {"name": DATA_VOLUME, "mountPath": DATA_DIR}


def add_data_volume(spec: dict[str, Any]) -> None:
    """Append the shared emptyDir to ``spec.volumes`` (refuses a name clash)."""
    volumes = spec.setdefault("volumes", [])
    if any(isinstance(v, dict) and v.get("name") == DATA_VOLUME for v in volumes):
        raise InvalidPod(f"pod spec.volumes: the pod already has a volume named {DATA_VOLUME}")
    volumes.append({"name": DATA_VOLUME, "emptyDir": {"medium": "Memory"}})
