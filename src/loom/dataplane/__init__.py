"""The per-workload agent: runs and supervises Envoy (and the DNS proxy)."""
