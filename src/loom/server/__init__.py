"""The control plane process: the Consul-shaped HTTP API over ``loom.control``, and the wiring
that runs it beside the xDS server (``app``)."""
