"""Loom: a service mesh written in Python that drives real Envoy sidecars."""

__version__ = "0.1.0"
