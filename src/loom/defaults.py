"""Default ports and addresses, in one place.

Loom speaks Consul's API and drives Envoy the way Consul and Istio do, so its defaults are
theirs: a user who knows ``CONSUL_HTTP_ADDR=127.0.0.1:8500`` or Istio's 15001 outbound
listener finds the same numbers here. Every module that needs one of these imports it from
here instead of writing the literal, so changing a default is one edit and ``grep`` finds
every user. Pure constants: no I/O, no imports beyond the standard library.
"""

from __future__ import annotations

LOOPBACK = "127.0.0.1"
"""Where clients look for the server by default (Consul agents listen on loopback)."""

HTTP_PORT = 8500
"""The HTTP API (Consul's ``ports.http``; ``CONSUL_HTTP_ADDR`` defaults to ``127.0.0.1:8500``)."""

HTTPS_PORT = 8501
"""The HTTP API over TLS (Consul's ``ports.https``, off unless configured)."""

GRPC_PORT = 8502
"""xDS over plaintext gRPC (Consul's ``ports.grpc``, what ``consul connect envoy`` dials)."""

GRPC_TLS_PORT = 8503
"""xDS over gRPC with TLS (Consul's ``ports.grpc_tls``, the default since Consul 1.14)."""

HTTP_ADDR = f"{LOOPBACK}:{HTTP_PORT}"
"""Default ``--http-addr`` of clients and of ``loom server``."""

GRPC_ADDR = f"{LOOPBACK}:{GRPC_PORT}"
"""Default ``--grpc-addr`` of the dataplane and of ``loom server``."""

OUTBOUND_PORT = 15001
"""Transparent proxy's outbound listener: iptables sends the app's outgoing traffic here
(Istio's ``15001`` virtualOutbound; Consul's ``TransparentProxy.OutboundListenerPort``)."""

DNS_PROXY_PORT = 15053
"""The sidecar's DNS proxy on loopback (Istio's agent DNS on 15053; iptables redirects the
app's port-53 queries to it)."""

PUBLIC_LISTENER_PORT = 20000
"""The sidecar's inbound (public, mTLS) listener: Consul's default for the first sidecar
(``sidecar_min_port`` is 21000 for registrations without a port; ``consul connect envoy``
examples and consul-k8s pods use 20000)."""

SIDECAR_MIN_PORT = 21000
"""First port Consul assigns to a sidecar registered without one (``ports.sidecar_min_port``)."""

SIDECAR_MAX_PORT = 21255
"""Last port of that range (``ports.sidecar_max_port``)."""

WEBHOOK_PORT = 8443
"""The injector webhook's HTTPS port (consul-k8s's connect-injector serves on 8443; the
installed Service maps 443 to it)."""

WEBHOOK_LISTEN = f"0.0.0.0:{WEBHOOK_PORT}"
"""The injector webhook's HTTPS listener."""

ENVOY_ADMIN_BIND = f"{LOOPBACK}:0"
"""Envoy's admin listener: loopback only, and port 0 so sidecars never collide (Consul's
``-admin-bind`` defaults to 19000, which one machine with several sidecars cannot share)."""

BEARER_TOKEN_FILE = "/var/run/secrets/kubernetes.io/serviceaccount/token"
"""Where Kubernetes mounts a pod's service-account token: connect-init's login credential."""
