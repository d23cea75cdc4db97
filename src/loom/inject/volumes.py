"""The shared in-memory volume between connect-init and the sidecar(s).

connect-init writes what it learned from the server (the proxy's ID, and with ACLs the token
its login got) into an ``emptyDir`` (``medium: Memory``) mounted at ``/loom/connect-inject``;
each sidecar reads its proxy ID (and token) from there. The file names are defined here once:
connect-init writes them, the sidecar's command line points at them. When the server speaks
TLS (``global.tls.enabled``), the same containers get its CA: as the PEM itself in
``CONSUL_CACERT_PEM`` when the webhook's values carry it (``global.tls.caCert.pem``; no
Secret is needed in the pod's namespace), else the Secret holding it mounted read-only at
``/loom/tls/ca`` and given as ``--ca-file``.
"""

from __future__ import annotations

from typing import Any

from loom.inject.plan import InvalidPod
from loom.inject.settings import ServerCaSettings

DATA_VOLUME = "loom-connect-inject-data"
"""Name of the injected emptyDir volume."""
DATA_DIR = "/loom/connect-inject"
"""Where the volume is mounted in the init and sidecar containers."""


CA_VOLUME = "loom-ca-cert"
"""Name of the injected volume holding the server's CA (when the server speaks TLS)."""
CA_DIR = "/loom/tls/ca"
"""Where it is mounted, read-only, in the init and sidecar containers."""
CA_PEM_ENV = "CONSUL_CACERT_PEM"
"""The variable carrying the CA's PEM (consul-k8s's name; read by ``loom.api.tls_from``)."""


def ca_file(secret_key: str) -> str:
    """Path of the server's CA certificate inside the containers."""
    return f"{CA_DIR}/{secret_key}"


def ca_mount() -> dict[str, Any]:
    return {"name": CA_VOLUME, "mountPath": CA_DIR, "readOnly": True}


def server_ca_args(ca: ServerCaSettings) -> list[str]:
    """``--ca-file`` of the server's CA, when the server speaks TLS from a mounted CA."""
    return [f"--ca-file={ca_file(ca.secret_key)}"] if ca.mounted else []


def server_ca_mounts(ca: ServerCaSettings) -> list[dict[str, Any]]:
    return [ca_mount()] if ca.mounted else []


def server_ca_env(ca: ServerCaSettings) -> list[dict[str, Any]]:
    """``CONSUL_CACERT_PEM``, when the server speaks TLS and the values carry its CA."""
    return [{"name": CA_PEM_ENV, "value": ca.pem}] if ca.enabled and ca.pem else []


def add_ca_volume(spec: dict[str, Any], secret_name: str, secret_key: str) -> None:
    """Append the Secret volume of the server's CA (only its one key; refuses a name clash)."""
    volumes = spec.setdefault("volumes", [])
    if any(isinstance(v, dict) and v.get("name") == CA_VOLUME for v in volumes):
        raise InvalidPod(f"pod spec.volumes: the pod already has a volume named {CA_VOLUME}")
    items = [{"key": secret_key, "path": secret_key}]
    volumes.append({"name": CA_VOLUME, "secret": {"secretName": secret_name, "items": items}})


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
