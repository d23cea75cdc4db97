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

    k8s = commands.group("k8s", "Kubernetes components: admission webhook, connect-init")
    webhook = k8s.add_parser(
        "webhook",
        help="run the mutating admission webhook (the connect injector) over HTTPS",
        description=(
            "Serves POST /mutate (AdmissionReview admission.k8s.io/v1, answered with a "
            "JSONPatch), GET /healthz and GET /metrics over HTTPS. The certificate and key "
            "are reloaded when their files change."
        ),
    )
    webhook.add_argument("--tls-cert", required=True, help="PEM certificate (chain) file")
    webhook.add_argument("--tls-key", required=True, help="PEM private key file")
    webhook.add_argument("--listen", default="0.0.0.0:8443", help="HOST:PORT (default %(default)s)")
    webhook.add_argument("--values", help="Helm-style values file (connectInject.*, global.*)")
    webhook.add_argument(
        "--namespace-labels-file",
        help="YAML {namespace: {label: value}} used for namespace labels (watched for changes)",
    )
    webhook.add_argument(
        "--reload-interval",
        type=float,
        default=1.0,
        help="seconds between checks of the certificate and labels files (default %(default)s)",
    )
    webhook.add_argument("--log-level", default="info", choices=["debug", "info", "warning"])
    webhook.set_defaults(func=run_webhook)


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


def run_webhook(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    import uvloop

    from loom.k8s.values import read_values, settings_from
    from loom.k8s.webhook import WebhookConfig, serve

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = settings_from(read_values(args.values))
    config = WebhookConfig(
        tls_cert=Path(args.tls_cert),
        tls_key=Path(args.tls_key),
        listen=args.listen,
        namespace_labels_file=Path(args.namespace_labels_file)
        if args.namespace_labels_file
        else None,
        reload_interval=args.reload_interval,
    )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(config, settings))
    return 0
