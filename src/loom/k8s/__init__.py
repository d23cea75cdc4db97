"""Kubernetes front-ends: the admission webhook, connect-init, the controller, install."""
