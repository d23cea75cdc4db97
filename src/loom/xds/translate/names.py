"""Names of generated resources, shared by every translator."""

from __future__ import annotations

LEAF_SECRET = "leaf"
ROOTS_SECRET = "roots"
LOCAL_APP = "local_app"
PASSTHROUGH = "original-destination"
PUBLIC_LISTENER = "public_listener"
OUTBOUND_LISTENER = "outbound_listener"

TYPE_LISTENER = "type.googleapis.com/envoy.config.listener.v3.Listener"
TYPE_CLUSTER = "type.googleapis.com/envoy.config.cluster.v3.Cluster"
TYPE_ENDPOINTS = "type.googleapis.com/envoy.config.endpoint.v3.ClusterLoadAssignment"
TYPE_SECRET = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"
ORDER = (TYPE_CLUSTER, TYPE_ENDPOINTS, TYPE_SECRET, TYPE_LISTENER)
"""Push order: clusters and their endpoints before the listeners that use them."""

ADS = {"ads": {}, "resource_api_version": "V3"}

AGENT_SDS_CLUSTER = "loom_agent_sds"
"""The bootstrap's static cluster to the dataplane agent's SDS unix socket."""
AGENT_SDS = {
    "resource_api_version": "V3",
    "api_config_source": {
        "api_type": "GRPC",
        "transport_api_version": "V3",
        "grpc_services": [{"envoy_grpc": {"cluster_name": AGENT_SDS_CLUSTER}}],
    },
}
"""Where Envoy gets ``leaf`` and ``roots``: from its local agent, which holds the key."""
AGENT_SECRETS = (LEAF_SECRET, ROOTS_SECRET)


def upstream_listener(service: str, namespace: str, port: int) -> str:
    return f"upstream:{namespace}/{service}:{port}"


def sni(service: str, namespace: str, datacenter: str, trust_domain: str) -> str:
    return f"{service}.{namespace}.{datacenter}.internal.{trust_domain}"


def subset_sni(subset: str, service: str, namespace: str, datacenter: str, td: str) -> str:
    """A target's cluster name and SNI, with Consul's ``<subset>.`` first label when the
    target is a ``service-resolver`` subset."""
    return (f"{subset}." if subset else "") + sni(service, namespace, datacenter, td)


def failover_cluster(n: int, aggregate: str) -> str:
    """The EDS cluster of target ``n`` (0: the primary) under aggregate cluster ``aggregate``
    (Consul's ``failover-target~N~<cluster>``)."""
    return f"failover-target~{n}~{aggregate}"


def external_cluster(host: str, port: int) -> str:
    return f"external:{host}:{port}"


def exposed_cluster(local_port: int) -> str:
    return f"exposed_cluster_{local_port}"
