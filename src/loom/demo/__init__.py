"""The local-mesh walkthrough and its sample workloads."""
