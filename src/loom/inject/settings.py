"""Injector settings: frozen dataclasses, parsed once from Helm-style values at the edge.

The values keys are the Consul Helm chart's (``connectInject.default``, ``k8sAllowNamespaces``,
``global.enableConsulNamespaces`` ...), so a user's knowledge and values files carry over.
Parsing is strict inside the sections Loom reads (``global``, ``connectInject``, ``server``,
``dns``): an unknown key or a value of the wrong type is a ``SettingsError`` naming the dotted
key. Other top-level sections are ignored (they may belong to other tools). ``loom install``
adds its own keys through ``extra_keys``.
"""

from __future__ import annotations

import dataclasses
import shlex
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, TypeVar

from loom import __version__
from loom.defaults import DNS_PROXY_PORT, GRPC_PORT, HTTP_PORT
from loom.inject.annotations import QUANTITY
from loom.inject.errors import SettingsError

T = TypeVar("T")

OWNED_SECTIONS = ("global", "connectInject", "server", "dns")
PROXY_UID = 5995
"""The user ID the sidecar (Envoy) runs as; excluded from traffic redirection (as Consul's)."""
INIT_UID = 5996
"""The user ID the init container runs as when it does not need root (no transparent proxy)."""


@dataclass(frozen=True)
class ContainerResources:
    """Kubernetes resource requests/limits of an injected container; None leaves one unset."""

    cpu_request: str | None = None
    """CPU request, a Kubernetes quantity such as ``100m``."""
    cpu_limit: str | None = None
    """CPU limit."""
    memory_request: str | None = None
    """Memory request, e.g. ``100Mi``."""
    memory_limit: str | None = None
    """Memory limit."""

    def to_k8s(self) -> dict[str, dict[str, str]]:
        """The container's ``resources`` value (empty sections left out)."""
        out: dict[str, dict[str, str]] = {}
        for section, cpu, memory in (
            ("limits", self.cpu_limit, self.memory_limit),
            ("requests", self.cpu_request, self.memory_request),
        ):
            values = {k: v for k, v in (("cpu", cpu), ("memory", memory)) if v is not None}
            if values:
                out[section] = values
        return out


@dataclass(frozen=True)
class TransparentProxyDefaults:
    """Cluster-wide transparent proxy defaults (``connectInject.transparentProxy``)."""

    enabled: bool = True
    """``defaultEnabled``: redirect all pod traffic through the sidecar unless the pod or its
    namespace says otherwise. True as in Consul: the mesh is enforced by default."""
    overwrite_probes: bool = True
    """``defaultOverwriteProbes``: point HTTP probes at the sidecar's expose listeners, since
    kubelet cannot speak mTLS to a redirected pod."""


@dataclass(frozen=True)
class MetricsDefaults:
    """Prometheus metrics of injected pods (``connectInject.metrics``), as consul-k8s."""

    enabled: bool = False
    """``defaultEnabled``: the sidecar serves metrics and the pod gets ``prometheus.io/*``
    annotations unless the pod says otherwise (off, as consul-k8s with metrics off)."""
    merging: bool = False
    """``defaultEnableMerging``: the app's own metrics are merged into the sidecar's."""
    scrape_port: int = 20200
    """``defaultPrometheusScrapePort``: where the sidecar serves them (consul-k8s's 20200)."""
    scrape_path: str = "/metrics"
    """``defaultPrometheusScrapePath``."""


@dataclass(frozen=True)
class NamespaceSettings:
    """Where pods are registered among Consul namespaces (``global.enableConsulNamespaces`` and
    ``connectInject.consulNamespaces``)."""

    enabled: bool = False
    """Register into Consul namespaces at all; off: everything in the default namespace and
    ``svc.ns`` upstream names are plain service names."""
    destination: str = "default"
    """``consulDestinationNamespace``: the single namespace used when not mirroring."""
    mirroring: bool = False
    """``mirroringK8S``: register each pod into the Consul namespace named as its k8s one."""
    mirroring_prefix: str = ""
    """``mirroringK8SPrefix``: prefix added to the mirrored namespace name (``k8s-``)."""

    def consul_namespace(self, k8s_namespace: str) -> str | None:
        """The Consul namespace for pods of ``k8s_namespace`` (None when namespaces are off)."""
        if not self.enabled:
            return None
        if self.mirroring:
            return self.mirroring_prefix + k8s_namespace
        return self.destination


@dataclass(frozen=True)
class Images:
    """Container images of the injected containers and the webhook."""

    loom: str = f"loom:{__version__}"
    """``global.image``: runs ``loom k8s connect-init`` and ``loom k8s webhook``."""
    dataplane: str = f"loom:{__version__}"
    """``global.imageDataplane`` (default: ``global.image``): runs ``loom dataplane`` + Envoy."""


@dataclass(frozen=True)
class ServerAddress:
    """How injected containers reach ``loom server`` (``server.httpAddr``/``grpcAddr``)."""

    http_addr: str = f"loom-server.loom.svc:{HTTP_PORT}"
    """HTTP API (catalog, registration) used by connect-init and the dataplane."""
    grpc_addr: str = f"loom-server.loom.svc:{GRPC_PORT}"
    """gRPC xDS address the dataplane's Envoy connects to."""


TLS_HTTP_PORT = 8501
"""The server's HTTPS API port (Consul's 8501), the default address when TLS is on."""
TLS_GRPC_PORT = 8503
"""The server's TLS xDS port (Consul's 8503)."""


@dataclass(frozen=True)
class ServerCaSettings:
    """The CA that signed the server's certificate, for an https server (``global.tls.*``,
    consul-k8s's names): injected containers get it as ``CONSUL_CACERT_PEM`` (when the values
    carry the PEM, as ``loom install``'s do) or mount it from a Secret, and verify with it."""

    enabled: bool = False
    """``global.tls.enabled``: the server speaks https (API) and TLS (xDS)."""
    secret_name: str = ""
    """``global.tls.caCert.secretName``: the Secret holding the CA certificate (required)."""
    secret_key: str = "tls.crt"
    """``global.tls.caCert.secretKey``: its key in the Secret (consul-k8s's default)."""
    pem: str = ""
    """``global.tls.caCert.pem``: the CA certificate itself (PEM). When set, injected
    containers get it in the environment (``CONSUL_CACERT_PEM``, as consul-k8s's webhook
    does) instead of a Secret volume, so pods in any namespace start without a copy of the
    Secret; empty: the Secret is mounted (it must exist in the pod's namespace)."""

    @property
    def mounted(self) -> bool:
        """The CA reaches injected containers as a Secret volume (no PEM in the values)."""
        return self.enabled and not self.pem


@dataclass(frozen=True)
class SidecarDnsSettings:
    """Redirection of the pod's DNS queries to the dataplane's DNS proxy (``dns.*``)."""

    redirection: bool = True
    """``enableRedirection``: with transparent proxy, send UDP/TCP 53 to the DNS proxy."""
    proxy_port: int = DNS_PROXY_PORT
    """``proxyPort``: where the dataplane's DNS proxy listens inside the pod."""


DEFAULT_AUTH_METHOD = "loom-k8s-auth-method"
"""The ``kubernetes`` auth method injected pods log in through when ACLs are managed."""


@dataclass(frozen=True)
class PodLoginSettings:
    """How injected pods get their ACL token (``global.acls.manageSystemACLs``,
    ``connectInject.overrideAuthMethodName``): connect-init logs in with the pod's
    service-account token and hands the token to the sidecar."""

    auth_method: str | None = None
    """The ``kubernetes`` auth method connect-init logs in through (consul-k8s's
    ``-acl-auth-method``); None: ACLs are not managed and pods do not log in."""


@dataclass(frozen=True)
class InjectSettings:
    """Everything the planner needs besides the pod and its namespace."""

    enabled: bool = True
    """``connectInject.enabled``: off makes the injector leave every pod alone."""
    default_inject: bool = False
    """``connectInject.default``: inject pods without a ``connect-inject`` annotation (opt-out
    instead of opt-in)."""
    allow_namespaces: tuple[str, ...] = ("*",)
    """``connectInject.k8sAllowNamespaces``: namespaces that may be injected; ``*`` is all."""
    deny_namespaces: tuple[str, ...] = ()
    """``connectInject.k8sDenyNamespaces``: never injected; wins over the allow list."""
    transparent_proxy: TransparentProxyDefaults = field(default_factory=TransparentProxyDefaults)
    """``connectInject.transparentProxy.*`` defaults."""
    sidecar_resources: ContainerResources = field(
        default_factory=lambda: ContainerResources("100m", "100m", "100Mi", "100Mi")
    )
    """``connectInject.sidecarProxy.resources``: defaults of each sidecar (Consul's)."""
    init_resources: ContainerResources = field(
        default_factory=lambda: ContainerResources("50m", "50m", "25Mi", "150Mi")
    )
    """``connectInject.initContainer.resources``: of each connect-init container (Consul's)."""
    envoy_extra_args: tuple[str, ...] = ()
    """``connectInject.envoyExtraArgs``: Envoy arguments unless the pod annotation sets some."""
    default_protocol: str | None = None
    """``connectInject.centralConfig.defaultProtocol``: protocol of services that do not say."""
    metrics: MetricsDefaults = field(default_factory=MetricsDefaults)
    """``connectInject.metrics.*`` defaults."""
    namespaces: NamespaceSettings = field(default_factory=NamespaceSettings)
    """Consul namespaces (``global.enableConsulNamespaces``, ``consulNamespaces.*``)."""
    images: Images = field(default_factory=Images)
    """Images of the injected containers."""
    server: ServerAddress = field(default_factory=ServerAddress)
    """Address of ``loom server`` as seen from pods."""
    dns: SidecarDnsSettings = field(default_factory=SidecarDnsSettings)
    """DNS redirection to the dataplane's DNS proxy."""
    login: PodLoginSettings = field(default_factory=PodLoginSettings)
    """ACL login of injected pods (off unless ACLs are managed or a method is named)."""
    server_ca: ServerCaSettings = field(default_factory=ServerCaSettings)
    """The server's CA, mounted into injected containers when the server speaks TLS."""

    @classmethod
    def from_values(
        cls, values: Mapping[str, Any], extra_keys: Iterable[str] = ()
    ) -> InjectSettings:
        """Settings from a parsed values document; ``extra_keys`` are accepted, not read."""
        reader = ValuesReader(values, extra_keys)
        default = cls()
        image = reader.get("global.image", str, default.images.loom)
        server_ca = _server_ca(reader)
        settings = cls(
            enabled=reader.get("connectInject.enabled", bool, default.enabled),
            default_inject=reader.get("connectInject.default", bool, default.default_inject),
            allow_namespaces=reader.strings(
                "connectInject.k8sAllowNamespaces", default.allow_namespaces
            ),
            deny_namespaces=reader.strings(
                "connectInject.k8sDenyNamespaces", default.deny_namespaces
            ),
            transparent_proxy=TransparentProxyDefaults(
                enabled=reader.get("connectInject.transparentProxy.defaultEnabled", bool, True),
                overwrite_probes=reader.get(
                    "connectInject.transparentProxy.defaultOverwriteProbes", bool, True
                ),
            ),
            sidecar_resources=reader.resources(
                "connectInject.sidecarProxy.resources", default.sidecar_resources
            ),
            init_resources=reader.resources(
                "connectInject.initContainer.resources", default.init_resources
            ),
            envoy_extra_args=reader.args("connectInject.envoyExtraArgs"),
            default_protocol=reader.optional("connectInject.centralConfig.defaultProtocol", str),
            metrics=MetricsDefaults(
                enabled=reader.get("connectInject.metrics.defaultEnabled", bool, False),
                merging=reader.get("connectInject.metrics.defaultEnableMerging", bool, False),
                scrape_port=reader.port("connectInject.metrics.defaultPrometheusScrapePort", 20200),
                scrape_path=reader.get(
                    "connectInject.metrics.defaultPrometheusScrapePath", str, "/metrics"
                ),
            ),
            namespaces=NamespaceSettings(
                enabled=reader.get("global.enableConsulNamespaces", bool, False),
                destination=reader.get(
                    "connectInject.consulNamespaces.consulDestinationNamespace", str, "default"
                ),
                mirroring=reader.get("connectInject.consulNamespaces.mirroringK8S", bool, False),
                mirroring_prefix=reader.get(
                    "connectInject.consulNamespaces.mirroringK8SPrefix", str, ""
                ),
            ),
            images=Images(loom=image, dataplane=reader.get("global.imageDataplane", str, image)),
            server=_server_address(reader, server_ca),
            dns=SidecarDnsSettings(
                redirection=reader.get("dns.enableRedirection", bool, True),
                proxy_port=reader.port("dns.proxyPort", DNS_PROXY_PORT),
            ),
            login=_login(reader),
            server_ca=server_ca,
        )
        if settings.default_protocol not in (None, "tcp", "http", "http2", "grpc"):
            raise SettingsError(
                "connectInject.centralConfig.defaultProtocol: "
                f"{settings.default_protocol!r} is not one of tcp, http, http2, grpc"
            )
        reader.check_unknown()
        return settings

    def replace(self, **changes: Any) -> InjectSettings:
        """A copy with some fields changed (for tests and front-ends)."""
        return dataclasses.replace(self, **changes)


def _server_ca(reader: ValuesReader) -> ServerCaSettings:
    enabled = reader.get("global.tls.enabled", bool, False)
    name = reader.get("global.tls.caCert.secretName", str, "")
    key = reader.get("global.tls.caCert.secretKey", str, "tls.crt")
    pem = reader.get("global.tls.caCert.pem", str, "")
    if enabled and not name and not pem:
        raise SettingsError(
            "global.tls.caCert.secretName: required with global.tls.enabled unless "
            "global.tls.caCert.pem is given (the Secret holding the CA that signed the "
            "server's certificate)"
        )
    if not key or "/" in key or key.startswith("."):
        raise SettingsError(f"global.tls.caCert.secretKey: {key!r} is not a Secret key")
    return ServerCaSettings(enabled, name if enabled else "", key, pem if enabled else "")


def _server_address(reader: ValuesReader, ca: ServerCaSettings) -> ServerAddress:
    """``server.httpAddr``/``grpcAddr``; with TLS on, https:// and Consul's TLS ports by
    default, and an address given without https:// is refused (it would skip the CA)."""
    if not ca.enabled:
        default = ServerAddress()
        return ServerAddress(
            reader.get("server.httpAddr", str, default.http_addr),
            reader.get("server.grpcAddr", str, default.grpc_addr),
        )
    address = ServerAddress(
        reader.get("server.httpAddr", str, f"https://loom-server.loom.svc:{TLS_HTTP_PORT}"),
        reader.get("server.grpcAddr", str, f"https://loom-server.loom.svc:{TLS_GRPC_PORT}"),
    )
    for key, value in (("server.httpAddr", address.http_addr),
                       ("server.grpcAddr", address.grpc_addr)):  # fmt: skip
        if not value.startswith("https://"):
            raise SettingsError(f"{key}: {value!r} must be https:// with global.tls.enabled")
    return address


def _login(reader: ValuesReader) -> PodLoginSettings:
    managed = reader.get("global.acls.manageSystemACLs", bool, False)
    name = reader.optional("connectInject.overrideAuthMethodName", str)
    if name is not None and not name:
        raise SettingsError("connectInject.overrideAuthMethodName: must not be empty")
    if name is None and managed:
        name = DEFAULT_AUTH_METHOD
    return PodLoginSettings(auth_method=name)


_MISSING = object()
_RESOURCE_KEYS = (
    ("requests.cpu", "cpu_request"),
    ("limits.cpu", "cpu_limit"),
    ("requests.memory", "memory_request"),
    ("limits.memory", "memory_limit"),
)


class ValuesReader:
    """Typed, strict access to dotted keys of a values document; remembers what was read."""

    def __init__(self, values: Mapping[str, Any], extra_keys: Iterable[str] = ()) -> None:
        if not isinstance(values, Mapping):
            raise SettingsError("values: the document must be a mapping of keys")
        self.values = values
        self.known: set[str] = set(extra_keys)

    def raw(self, path: str) -> object:
        """The value at ``path`` or ``_MISSING``; null counts as missing (Helm's behaviour)."""
        self.known.add(path)
        node: object = self.values
        walked: list[str] = []
        for part in path.split("."):
            if node is None:
                return _MISSING
            if not isinstance(node, Mapping):
                raise SettingsError(f"{'.'.join(walked)}: expected a mapping, got {node!r}")
            walked.append(part)
            node = node.get(part, _MISSING)
            if node is _MISSING:
                return _MISSING
        return _MISSING if node is None else node

    def get(self, path: str, kind: type[T], default: T) -> T:
        value = self.optional(path, kind)
        return default if value is None else value

    def optional(self, path: str, kind: type[T]) -> T | None:
        value = self.raw(path)
        if value is _MISSING:
            return None
        # bool is an int in Python: never accept one for the other.
        if not isinstance(value, kind) or (kind is not bool and isinstance(value, bool)):
            raise SettingsError(f"{path}: expected {_kind_name(kind)}, got {value!r}")
        return value

    def port(self, path: str, default: int) -> int:
        value = self.get(path, int, default)
        if not 0 < value < 65536:
            raise SettingsError(f"{path}: {value} is not a port number (1-65535)")
        return value

    def strings(self, path: str, default: tuple[str, ...]) -> tuple[str, ...]:
        value = self.raw(path)
        if value is _MISSING:
            return default
        if not isinstance(value, list) or not all(isinstance(v, str) for v in value):
            raise SettingsError(f"{path}: expected a list of strings, got {value!r}")
        return tuple(value)

    def args(self, path: str) -> tuple[str, ...]:
        value = self.raw(path)
        if value is _MISSING:
            return ()
        if isinstance(value, list) and all(isinstance(v, str) for v in value):
            return tuple(value)
        if isinstance(value, str):
            try:
                return tuple(shlex.split(value))
            except ValueError as exc:
                raise SettingsError(f"{path}: cannot split into arguments: {exc}") from None
        raise SettingsError(f"{path}: expected a string or a list of strings, got {value!r}")

    def resources(self, path: str, default: ContainerResources) -> ContainerResources:
        changes: dict[str, str | None] = {}
        for sub, attr in _RESOURCE_KEYS:
            key = f"{path}.{sub}"
            value = self.raw(key)
            if value is _MISSING:
                # An explicit null removes Consul's default; an absent key keeps it.
                if self._explicit_null(key):
                    changes[attr] = None
                continue
            if isinstance(value, int | float) and not isinstance(value, bool):
                value = str(value)
            if not isinstance(value, str) or not QUANTITY.match(value):
                raise SettingsError(f"{key}: {value!r} is not a Kubernetes quantity")
            changes[attr] = value
        return dataclasses.replace(default, **changes)

    def _explicit_null(self, path: str) -> bool:
        node: object = self.values
        for part in path.split("."):
            if not isinstance(node, Mapping) or part not in node:
                return False
            node = node[part]
        return node is None

    def check_unknown(self) -> None:
        """Raise for a key inside an owned section that nothing read."""
        for path in _leaf_paths(self.values):
            if path.split(".", 1)[0] not in OWNED_SECTIONS:
                continue
            if path in self.known or any(k.startswith(path + ".") for k in self.known):
                continue
            if any(path.startswith(k + ".") for k in self.known):
                continue
            raise SettingsError(f"{path}: unknown key")


def _leaf_paths(node: Mapping[str, Any], prefix: str = "") -> list[str]:
    out = []
    for key in sorted(node, key=str):
        path = f"{prefix}{key}"
        child = node[key]
        if isinstance(child, Mapping) and child:
            out.extend(_leaf_paths(child, path + "."))
        else:
            out.append(path)
    return out


def _kind_name(kind: type[object]) -> str:
    names: dict[type[object], str] = {bool: "a boolean", str: "a string", int: "an integer"}
    return names.get(kind, kind.__name__)
