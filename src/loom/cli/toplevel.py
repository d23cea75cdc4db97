"""The top-level commands, their one-line helps and the command modules that register each,
so that ``loom --help`` (issue 17: <= 150 ms on a slow machine) and ``loom COMMAND ...`` import
and build only what they show or run instead of every command's parser.

``MODULES`` is the order every module registers in (``build_parser`` of the whole tree);
``TOP`` lists the commands in the order they appear in ``loom --help``, each with the help it
is registered with and the modules (in ``MODULES`` order) that add it or join its group.
``tests/unit/test_cli_toplevel.py`` fails, printing the right table, when a module's
registrations no longer match it.
"""

from __future__ import annotations

MODULES: tuple[str, ...] = (
    "server",
    "api",
    "explain",
    "snapshot",
    "kv",
    "acl",
    "query",
    "dataplane",
    "redirect",
    "dns",
    "inject",
    "local",
    "demo",
    "operator",  # after api and dataplane: it joins the catalog and connect groups they make
    "proxy",
    "doctor",
    "completion",
)
"""Every command module under ``loom.cli``, in registration order."""

TOP: tuple[tuple[str, str, tuple[str, ...]], ...] = (
    ("server", "run the control plane (catalog, intentions, CA, HTTP API, xDS)", ("server",)),
    ("services", "register and deregister services", ("api",)),
    ("catalog", "read the catalog", ("api", "operator")),
    ("intention", "manage intentions (who may connect to whom)", ("api", "explain")),
    ("config", "manage config entries", ("api",)),
    ("snapshot", "save and restore the whole state of the server", ("snapshot",)),
    ("kv", "read and write the key/value store (Consul's consul kv)", ("kv",)),
    ("acl", "ACL tokens and templated policies (Consul's consul acl)", ("acl",)),
    ("query", "manage and run prepared queries", ("query",)),
    ("dataplane", "run a sidecar: Envoy configured over xDS by the server", ("dataplane",)),
    (
        "connect",
        "sidecar helpers (Envoy bootstrap, traffic redirection)",
        ("dataplane", "redirect", "operator"),
    ),
    ("dns-proxy", "run the DNS proxy standalone (mesh names + caching forwarder)", ("dns",)),
    (
        "inject",
        "inject Loom sidecars into Kubernetes manifests (offline, like kube-inject)",
        ("inject",),
    ),
    ("uninject", "undo loom inject: put injected pods back as they were", ("inject",)),
    (
        "install",
        "print the Kubernetes manifests that install Loom (server, injector, controller)",
        ("inject",),
    ),
    ("k8s", "Kubernetes components: admission webhook, connect-init", ("inject",)),
    (
        "local",
        "a mesh on this machine: network namespaces as pods, real Envoy sidecars (needs root)",
        ("local",),
    ),
    ("demo", "walk through the seeds' examples on a local mesh (root) or on loopback", ("demo",)),
    ("http-echo", "a tiny HTTP server answering fixed text (like hashicorp/http-echo)", ("demo",)),
    ("members", "list the members of the server's pool (Consul's table)", ("operator",)),
    ("proxy", "what the server sends each connected proxy", ("proxy",)),
    ("wait", "wait for the server or a proxy to be ready (for scripts)", ("proxy",)),
    (
        "doctor",
        "check the server, CA, Envoy, iptables, clock and Kubernetes (like linkerd check)",
        ("doctor",),
    ),
    ("completion", "print the shell completion script for bash or zsh", ("completion",)),
)
"""(command, its help in ``loom --help``, the modules registering it), in ``loom --help`` order."""

OWNERS = {name: modules for name, _, modules in TOP}
"""The modules to register for ``loom NAME ...``."""
