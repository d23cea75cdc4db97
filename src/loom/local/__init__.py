"""The one-machine mesh (``loom local``): network namespaces as pods on a private bridge.

``netns`` holds the network plumbing (node namespace, bridge, pod namespaces, addresses,
resolv.conf); the processes of a pod (app, dataplane, Envoy) are started on top of it.
"""
