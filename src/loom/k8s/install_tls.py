"""``loom install``'s TLS on the control plane (``global.tls.enabled``, on by default).

As Consul's Helm chart does with ``global.tls.enabled``: the server listens only on HTTPS
(8501) and TLS gRPC (8503) with a certificate from a Secret (``<name>-server-cert``), and the
CA that signed it is a Secret of its own (``global.tls.caCert.secretName``, default
``<name>-ca-cert``, key ``tls.crt``) that every client mounts read-only: the controller and
the acl-init Job (``--ca-file``), the DNS proxy beside the server (``CONSUL_CACERT``), and,
through the values ConfigMap the webhook reads (``https://`` addresses and the CA's PEM in
``global.tls.caCert.pem``), connect-init and the dataplane of each injected pod, which get
the PEM in ``CONSUL_CACERT_PEM`` as consul-k8s's do: a pod mounts Secrets of its own
namespace only, so injected pods in any namespace start with no copy of the Secret. The
material is an
argument (made by ``certs.generate_server_tls`` or read from the operator's files by the
CLI); rendering is pure. ``global.tls.enabled: false`` (``loom install --tls=false``) keeps
plain 8500/8502.
"""

from __future__ import annotations

import base64
from typing import TYPE_CHECKING, Any

from loom.inject import InjectSettings, SettingsError
from loom.inject.settings import TLS_GRPC_PORT, TLS_HTTP_PORT, ServerCaSettings
from loom.k8s.install_common import meta

if TYPE_CHECKING:
    from loom.k8s.install import TlsMaterial

TLS_ENABLED_KEY = "global.tls.enabled"
SERVER_TLS_DIR = "/etc/loom/server-tls"
"""Where the server's certificate Secret is mounted in the server container."""
SERVER_CA_DIR = "/etc/loom/server-ca"
"""Where the CA Secret is mounted in the controller, acl-init and DNS proxy containers."""


def server_cert_secret(name: str) -> str:
    """The ``kubernetes.io/tls`` Secret of the server's certificate and key."""
    return f"{name}-server-cert"


def with_tls_default(values: dict[str, Any]) -> dict[str, Any]:
    """``values`` with TLS on unless ``global.tls.enabled`` says otherwise; with TLS on, the
    CA Secret (``<name>-ca-cert``) and the ``https://`` server addresses of the installation
    (``<name>-server.<namespace>.svc``, 8501/8503) unless they are given."""
    glob = values.get("global")
    glob = dict(glob) if isinstance(glob, dict) else {}
    tls = glob.get("tls")
    tls = dict(tls) if isinstance(tls, dict) else {}
    tls.setdefault("enabled", True)
    if tls["enabled"] is not True:
        return {**values, "global": {**glob, "tls": tls}}
    name = glob.get("name") if isinstance(glob.get("name"), str) else "loom"
    namespace = glob.get("namespace") if isinstance(glob.get("namespace"), str) else "loom"
    ca = tls.get("caCert")
    ca = dict(ca) if isinstance(ca, dict) else {}
    ca.setdefault("secretName", f"{name}-ca-cert")
    tls["caCert"] = ca
    server = values.get("server")
    server = dict(server) if isinstance(server, dict) else {}
    host = f"https://{name}-server.{namespace}.svc"
    server.setdefault("httpAddr", f"{host}:{TLS_HTTP_PORT}")
    server.setdefault("grpcAddr", f"{host}:{TLS_GRPC_PORT}")
    return {**values, "global": {**glob, "tls": tls}, "server": server}


def with_ca_pem(values: dict[str, Any], material: TlsMaterial) -> dict[str, Any]:
    """``values`` (TLS on) with the CA's PEM in ``global.tls.caCert.pem``, for the webhook:
    it hands injected containers the CA in their environment (``CONSUL_CACERT_PEM``)."""
    glob = dict(values.get("global") or {})
    tls = dict(glob.get("tls") or {})
    tls["caCert"] = {**dict(tls.get("caCert") or {}), "pem": material.ca_pem.decode()}
    return {**values, "global": {**glob, "tls": tls}}


def tls_secrets(
    name: str,
    namespace: str,
    ca: ServerCaSettings,
    material: TlsMaterial,
    labels: dict[str, str],
    server: bool,
) -> list[dict[str, Any]]:
    """The CA Secret the installation's own clients mount (in ``namespace``), and
    (``server``: the server is rendered) the server's certificate Secret (its ``ca.crt``
    too, as cert-manager's Secrets carry it)."""

    def b64(pem: bytes) -> str:
        return base64.b64encode(pem).decode()

    docs = [
        {
            **meta("v1", "Secret", ca.secret_name, namespace, labels),
            "type": "Opaque",
            "data": {ca.secret_key: b64(material.ca_pem)},
        }
    ]
    if server:
        docs.append(
            {
                **meta("v1", "Secret", server_cert_secret(name), namespace, labels),
                "type": "kubernetes.io/tls",
                "data": {
                    "tls.crt": b64(material.cert_pem),
                    "tls.key": b64(material.key_pem),
                    "ca.crt": b64(material.ca_pem),
                },
            }
        )
    return docs


def check_material(inject: InjectSettings, server: bool, material: TlsMaterial | None) -> None:
    """Refuses a rendered TLS server without its certificate, or material with TLS off."""
    if inject.server_ca.enabled and server and material is None:
        raise SettingsError(
            f"{TLS_ENABLED_KEY}: the server's certificate is not given (loom install generates "
            "one, or takes --tls-cert-file/--tls-key-file/--tls-ca-file)"
        )
    if not inject.server_ca.enabled and material is not None:
        raise SettingsError(f"{TLS_ENABLED_KEY}: a server certificate is given with TLS off")


def ca_file(ca: ServerCaSettings) -> str:
    """The CA's path in the containers ``mount_ca`` mounts it into."""
    return f"{SERVER_CA_DIR}/{ca.secret_key}"


def mount_ca(
    container: dict[str, Any], volumes: list[dict[str, Any]], ca: ServerCaSettings
) -> None:
    """Mount only the CA's key of its Secret, read-only, at ``SERVER_CA_DIR``."""
    container.setdefault("volumeMounts", []).append(
        {"name": "server-ca", "mountPath": SERVER_CA_DIR, "readOnly": True}
    )
    items = [{"key": ca.secret_key, "path": ca.secret_key}]
    volumes.append({"name": "server-ca", "secret": {"secretName": ca.secret_name, "items": items}})
