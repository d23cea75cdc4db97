"""The application core of the control plane, below every server that exposes it.

``State`` owns the store and the write lock; over them sit the catalog (instances, checks,
nodes, VIPs, with their indexes), config entries and intentions, and the CA (``Certs``).
Queries that are more than a lookup (health, intention match and check, connect authorize)
live here too, so the HTTP API, xDS and DNS all see the same answers. Nothing here speaks a
wire protocol: ``loom.server`` (HTTP), ``loom.xds`` (gRPC) and the DNS table endpoint format
what these return.
"""
