"""``loom install``'s TLS on the control plane (``global.tls.enabled``, on by default).

As Consul's Helm chart does with ``global.tls.enabled``: the server listens only on HTTPS
(8501) and TLS gRPC (8503) with a certificate from a Secret (``<name>-server-cert``), and the
CA that signed it is a Secret of its own (``global.tls.caCert.secretName``, default
``<name>-ca-cert``, key ``tls.crt``) that every client mounts read-only: the controller and
the acl-init Job (``--ca-file``), the DNS proxy beside the server (``CONSUL_CACERT``), and,
through the values ConfigMap the webhook reads, connect-init and the dataplane of each
injected pod (``https://`` addresses, ``--ca-file``); the CA Secret is also rendered in each
namespace of ``connectInject.k8sAllowNamespaces`` when that list is explicit (a pod mounts
Secrets of its own namespace only; with ``*`` the user copies it). The material is an
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


def tls_secrets(
    name: str,
    namespace: str,
    ca: ServerCaSettings,
    material: TlsMaterial,
    labels: dict[str, str],
    server: bool,
    injected: tuple[str, ...] = (),
) -> list[dict[str, Any]]:
    """The CA Secret clients mount, in ``namespace`` and in each ``injected`` namespace (a
    pod mounts a Secret of its own namespace only), and (``server``: the server is rendered)
    the server's certificate Secret (its ``ca.crt`` too, as cert-manager's Secrets carry it)."""

    def b64(pem: bytes) -> str:
        return base64.b64encode(pem).decode()

    docs = [
        {
            **meta("v1", "Secret", ca.secret_name, where, labels),
            "type": "Opaque",
            "data": {ca.secret_key: b64(material.ca_pem)},
        }
        for where in dict.fromkeys([namespace, *injected])
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


def injected_namespaces(inject: InjectSettings) -> tuple[str, ...]:
    """The namespaces injected pods may run in, when the values list them
    (``connectInject.k8sAllowNamespaces`` other than ``*``, less the deny list)."""
    if "*" in inject.allow_namespaces:
        return ()
    return tuple(n for n in inject.allow_namespaces if n not in inject.deny_namespaces)


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
