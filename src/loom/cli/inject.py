"""CLI of the Kubernetes connect injector.

- ``loom inject -f FILE|-``: offline injection of manifests (like ``istioctl kube-inject``);
- ``loom k8s webhook``: the mutating admission webhook (HTTPS);
- ``loom k8s connect-init``: the init container's logic;
- ``loom install``: the Kubernetes install manifests.

Handlers only parse flags, read files and print; the work is in ``loom.k8s`` and
``loom.inject``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from loom.inject import SettingsError

if TYPE_CHECKING:
    from loom.cli import Commands


def register(commands: Commands) -> None:
    """Register ``inject``, ``install`` and ``k8s webhook|connect-init``."""
    inject = commands.top.add_parser(
        "inject",
        help="inject Loom sidecars into Kubernetes manifests (offline, like kube-inject)",
        description=(
            "Reads Kubernetes YAML (Pods, Deployments, StatefulSets, DaemonSets, ReplicaSets, "
            "Jobs, CronJobs, Lists; other kinds pass through) and prints it with the "
            "connect-init container and the loom dataplane sidecar injected, following the "
            "consul.hashicorp.com/* annotations."
        ),
    )
    inject.add_argument("-f", "--filename", required=True, help="manifest file, or - for stdin")
    inject.add_argument("--values", help="Helm-style values file (connectInject.*, global.*)")
    inject.add_argument(
        "--namespace", help="namespace of the objects (default: metadata.namespace or default)"
    )
    inject.add_argument(
        "--namespace-labels",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="a label of the namespace (repeatable), "
        "e.g. consul.hashicorp.com/transparent-proxy=false",
    )
    inject.add_argument(
        "--explain", action="store_true", help="print the decision for each pod on stderr"
    )
    inject.set_defaults(func=run_inject)


def parse_labels(items: list[str]) -> dict[str, str]:
    """``KEY=VALUE`` flags as a dict; a flag without ``=`` is an error."""
    labels = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep or not key:
            raise SettingsError(f"--namespace-labels {item!r}: expected KEY=VALUE")
        labels[key] = value
    return labels


def run_inject(args: argparse.Namespace) -> int:
    from loom.k8s.errors import ManifestError
    from loom.k8s.manifests import inject_text
    from loom.k8s.values import read_values, settings_from

    settings = settings_from(read_values(args.values))
    labels = parse_labels(args.namespace_labels)
    if args.filename == "-":
        text = sys.stdin.read()
    else:
        try:
            text = Path(args.filename).read_text()
        except OSError as exc:
            raise ManifestError(f"{args.filename}: cannot read: {exc.strerror}") from None
    out, outcomes = inject_text(text, settings, args.namespace, labels)
    if args.explain:
        for outcome in outcomes:
            verdict = "injected" if outcome.injected else "not injected"
            print(f"{outcome.object}: {verdict}: {'; '.join(outcome.reasons)}", file=sys.stderr)
    sys.stdout.write(out)
    return 0
