"""xDS: per-proxy snapshot inputs, pure translators to Envoy resources, and the ADS server.

ingest (store) -> view (one per store change, shared) -> inputs (per proxy, hashable)
-> translate (pure: inputs -> Envoy resources as canonical dicts) -> serve (gRPC ADS).
"""
