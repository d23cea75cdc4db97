"""CLI of the Kubernetes connect injector.

- ``loom inject -f FILE|-``: offline injection of manifests (like ``istioctl kube-inject``);
- ``loom k8s webhook``: the mutating admission webhook (HTTPS);
- ``loom k8s connect-init``: the init container's logic;
- ``loom k8s controller``: registers injected pods' services with the server;
- ``loom install``: the Kubernetes install manifests.

Handlers only parse flags, read files and print; the work is in ``loom.k8s`` and
``loom.inject``.
"""

from __future__ import annotations

import argparse
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from loom import defaults
from loom.keyvalue import parse_key_values

if TYPE_CHECKING:
    from loom.cli import Commands


def register(commands: Commands) -> None:
    """Register ``inject``, ``install`` and ``k8s webhook|connect-init|controller``."""
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

    uninject = commands.top.add_parser(
        "uninject",
        help="undo loom inject: put injected pods back as they were",
        description=(
            "Reads Kubernetes YAML as loom inject does and prints it with every injected pod "
            "(template) restored from its consul.hashicorp.com/original-pod annotation (the "
            "metadata and spec before injection); other objects and pods pass unchanged."
        ),
    )
    uninject.add_argument(
        "-f", "--filename", required=True, help="injected manifest file, or - for stdin"
    )
    uninject.add_argument(
        "--explain", action="store_true", help="say for each pod whether it was restored, on stderr"
    )
    uninject.set_defaults(func=run_uninject)

    install = commands.top.add_parser(
        "install",
        help="print the Kubernetes manifests that install Loom (server, injector, controller)",
        description=(
            "Renders the whole system as YAML: the Namespace, consul.hashicorp.com CRDs, the "
            "webhook (ServiceAccount + RBAC, values ConfigMap, Deployment, Service), with ACLs "
            "managed (the default; global.acls.manageSystemACLs) the token Secrets (fresh UUIDs "
            "each run), the TokenReview reviewer account and the acl-init Job, the Loom server "
            "(StatefulSet on SQLite or etcd, HTTPS/gRPC-TLS/DNS Services), the controller (2 "
            "replicas electing a leader, CRD sync) and the MutatingWebhookConfiguration: "
            "`loom install | kubectl apply -f -`. TLS on the control plane is on by default "
            "(global.tls.enabled, as Consul's Helm chart): the server listens only on HTTPS "
            "8501 and TLS gRPC 8503 with a certificate signed by a CA generated at each run "
            "(or --tls-cert-file), the CA goes in the Secret <name>-ca-cert (for the "
            "controller and acl-init) and in the values (injected pods get it as "
            "CONSUL_CACERT_PEM, in any namespace), and every client verifies the server with it."
        ),
    )
    install.add_argument("--values", help="Helm-style values file")
    install.add_argument(
        "--tls",
        type=_true_false,
        metavar="true|false",
        help="TLS on the control plane (global.tls.enabled; default true). --tls=false "
        "renders the server on plain HTTP 8500 and gRPC 8502, unverified and unencrypted: "
        "only for a trusted network",
    )
    install.add_argument(
        "--tls-cert-file",
        metavar="PATH",
        help="PEM certificate for the server instead of a generated one (its names must "
        "include <name>-server.<namespace>.svc and 127.0.0.1); with --tls-key-file and "
        "--tls-ca-file",
    )
    install.add_argument("--tls-key-file", metavar="PATH", help="PEM key of --tls-cert-file")
    install.add_argument(
        "--tls-ca-file",
        metavar="PATH",
        help="PEM CA that signed --tls-cert-file: what every client verifies the server with",
    )
    install.add_argument(
        "--generate-certs",
        action="store_true",
        help="generate the webhook's CA and serving certificate: adds its TLS Secret and "
        "the caBundle (otherwise the webhook makes its own, or cert-manager's inject-ca-from "
        "annotation is used); the server's certificate is generated either way (--tls)",
    )
    install.add_argument(
        "--webhook-url",
        help="https://HOST:PORT the API server reaches the webhook at (connectInject.webhookUrl;"
        " rendered as clientConfig.url, and HOST in the generated certificate)",
    )
    install.set_defaults(func=run_install)

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
    webhook.add_argument("--tls-cert", help="PEM certificate (chain) file")
    webhook.add_argument("--tls-key", help="PEM private key file")
    webhook.add_argument(
        "--webhook-config",
        help="manage the certificate: make a CA and serving certificate in --cert-dir, add "
        "the CA to this MutatingWebhookConfiguration's caBundle, rotate before expiry",
    )
    webhook.add_argument(
        "--cert-dir", default="/tmp/loom-webhook-tls",
        help="where the managed CA and serving certificate are written (default %(default)s)",
    )  # fmt: skip
    webhook.add_argument(
        "--service", default="loom-connect-injector",
        help="the webhook Service, whose names the certificate carries (default %(default)s)",
    )
    webhook.add_argument(
        "--service-namespace", help="its namespace (default: $POD_NAMESPACE, else loom)"
    )
    webhook.add_argument(
        "--cert-host", action="append", default=[], help="another name or IP (repeatable)"
    )
    for flag, default in (("cert-validity", 365 * 86400.0), ("cert-renew-before", 30 * 86400.0),
                          ("cert-check-interval", 60.0)):  # fmt: skip
        webhook.add_argument(
            f"--{flag}", type=float, default=default, help="seconds (default %(default)s)"
        )
    webhook.add_argument(
        "--kubeconfig", help="for --webhook-config (default: in-cluster, else ~/.kube/config)"
    )
    webhook.add_argument(
        "--listen", default=defaults.WEBHOOK_LISTEN, help="HOST:PORT (default %(default)s)"
    )
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
    webhook.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning"],
        help="log level (default info)",
    )  # fmt: skip
    webhook.set_defaults(func=run_webhook)

    init = k8s.add_parser(
        "connect-init",
        help="init container: wait for the pod's registration, write the proxy ID, redirect",
        description=(
            "Waits until the pod's service instance (Meta pod-name/k8s-namespace) and its "
            "sidecar proxy are registered with the server, writes the proxy ID to the output "
            "directory, then installs the transparent-proxy redirection named by the "
            "arguments after `--` (the flags of `loom connect redirect-traffic`). Exits "
            "non-zero after --timeout."
        ),
    )
    _add_http_addr(init)
    init.add_argument(
        "--pod-name", default=os.environ.get("POD_NAME"), help="pod name (env POD_NAME)"
    )
    init.add_argument(
        "--pod-namespace",
        default=os.environ.get("POD_NAMESPACE"),
        help="pod namespace (env POD_NAMESPACE)",
    )
    init.add_argument("--service-name", help="the service of a multi-port pod this is for")
    init.add_argument("--consul-namespace", help="Consul namespace of the registration")
    init.add_argument(
        "--output-dir", default="/loom/connect-inject", help="shared volume (default %(default)s)"
    )
    init.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait (default %(default)s)"
    )
    init.add_argument(
        "--log-interval",
        type=float,
        default=5.0,
        help="seconds between waiting messages (default %(default)s)",
    )
    init.add_argument(
        "--skip-redirect", action="store_true", help="do not install the traffic redirection"
    )
    init.add_argument(
        "--netns",
        metavar="NAME",
        help="install the redirection in this named network namespace instead of this one "
        "(tests, debugging)",
    )
    init.add_argument(
        "--acl-auth-method",
        "-acl-auth-method",
        help="log in through this ACL auth method with the pod's service-account token first",
    )
    init.add_argument(
        "--bearer-token-file",
        "-bearer-token-file",
        default=defaults.BEARER_TOKEN_FILE,
        help="the pod's service-account token (default %(default)s)",
    )
    init.add_argument(
        "--acl-token-sink",
        "-acl-token-sink",
        help="where to write the login token for the sidecar, mode 0600 "
        "(default: acl-token in --output-dir)",
    )
    init.add_argument(
        "--acl-token-owner",
        type=int,
        help="user ID to give the token file to when running as root (the sidecar's)",
    )
    init.epilog = (
        "Arguments after -- are the flags of `loom connect redirect-traffic` "
        "(--proxy-uid ... ; transparent proxy)."
    )
    init.set_defaults(func=run_connect_init, takes_rest=True)

    controller = k8s.add_parser(
        "controller",
        help="register injected pods' services with the server (the endpoints controller)",
        description=(
            "Watches Pods, Services and Namespaces and keeps the server's registrations of "
            "injected pods current: one service (plus sidecar) per pod and Consul service, at "
            "the pod IP, with the selecting Service's ClusterIP as virtual address and a "
            "check following the pod's Ready condition; deregisters pods that are gone."
        ),
    )
    _add_http_addr(controller)
    controller.add_argument("--values", help="Helm-style values file (connectInject.*, global.*)")
    controller.add_argument(
        "--kubeconfig", help="kubeconfig file (default: in-cluster, else ~/.kube/config)"
    )
    controller.add_argument("--namespace", help="only this namespace (default: all)")
    controller.add_argument(
        "--resync",
        type=float,
        default=60.0,
        help="seconds between full reconciles without events (default %(default)s)",
    )
    controller.add_argument(
        "--crds",
        action="store_true",
        help="also sync consul.hashicorp.com/v1alpha1 ServiceDefaults, ProxyDefaults, "
        "ServiceIntentions and Mesh resources to config entries",
    )
    controller.add_argument(
        "--datacenter",
        default="dc1",
        help="marked on the entries resources make (default %(default)s)",
    )
    controller.add_argument(
        "--leader-elect",
        action="store_true",
        help="run only while holding a coordination.k8s.io Lease (for several replicas)",
    )
    controller.add_argument(
        "--leader-elect-resource-name", default="loom-controller-leader",
        help="the Lease's name (default %(default)s)",
    )
    controller.add_argument(
        "--leader-elect-resource-namespace",
        help="the Lease's namespace (default: $POD_NAMESPACE, else default)",
    )
    for flag, default in (("lease-duration", 15.0), ("renew-deadline", 10.0),
                          ("retry-period", 2.0)):  # fmt: skip
        controller.add_argument(
            f"--leader-elect-{flag}", type=float, default=default,
            help="seconds (client-go's default %(default)s)",
        )  # fmt: skip
    controller.add_argument(
        "--log-level", default="info", choices=["debug", "info", "warning"],
        help="log level (default info)",
    )  # fmt: skip
    controller.set_defaults(func=run_controller)

    acl = k8s.add_parser(
        "acl-init",
        help="make the installation's ACL records (auth method, binding rule, tokens)",
        description=(
            "consul-k8s's server-acl-init for Loom, run by `loom install`'s Job: with the "
            "management token, writes the kubernetes auth method (TokenReviews to the API "
            "server with the reviewer's token), its ${serviceaccount.name} binding rule, and "
            "the endpoints controller's policy and token (SecretID from its Secret). "
            "Idempotent."
        ),
    )
    _add_http_addr(acl)
    acl.add_argument("--token-file", required=True, help="the server's management token")
    acl.add_argument(
        "--auth-method-name", default="loom-k8s-auth-method", help="default %(default)s"
    )
    acl.add_argument(
        "--kubernetes-host", default="https://kubernetes.default.svc", help="default %(default)s"
    )
    acl.add_argument(
        "--kubernetes-ca-file",
        required=True,
        help="PEM CA of the Kubernetes API server's certificate (the auth method's CACert)",
    )
    acl.add_argument("--reviewer-jwt-file", required=True, help="the reviewer's token")
    acl.add_argument(
        "--controller-token-file", required=True, help="SecretID of the controller's token"
    )
    acl.add_argument("--prefix", default="loom", help="global.name (default %(default)s)")
    acl.add_argument(
        "--timeout", type=float, default=120.0, help="seconds to wait for the server (default 120)"
    )
    acl.set_defaults(func=run_acl_init)


def _add_http_addr(parser: argparse.ArgumentParser) -> None:
    from loom.cli.api import add_tls_flags

    parser.add_argument(
        "--http-addr",
        default=os.environ.get("LOOM_HTTP_ADDR", defaults.HTTP_ADDR),
        help="server HTTP API address, https://HOST:PORT for TLS "
        f"(env LOOM_HTTP_ADDR; default {defaults.HTTP_ADDR})",
    )
    add_tls_flags(parser)


def run_inject(args: argparse.Namespace) -> int:
    from loom.k8s.manifests import inject_text
    from loom.k8s.values import read_values, settings_from

    settings = settings_from(read_values(args.values))
    labels = parse_key_values(args.namespace_labels, "--namespace-labels")
    text = _read_manifest(args.filename)
    out, outcomes = inject_text(text, settings, args.namespace, labels)
    for outcome in outcomes:
        if args.explain:
            verdict = "injected" if outcome.injected else "not injected"
            print(f"{outcome.object}: {verdict}: {'; '.join(outcome.reasons)}", file=sys.stderr)
        for warning in outcome.warnings:
            print(f"loom: warning: {outcome.object}: {warning}", file=sys.stderr)
    sys.stdout.write(out)
    return 0


def _read_manifest(filename: str) -> str:
    from loom.k8s.errors import ManifestError

    if filename == "-":
        return sys.stdin.read()
    try:
        return Path(filename).read_text()
    except OSError as exc:
        raise ManifestError(f"{filename}: cannot read: {exc.strerror}") from None


def run_uninject(args: argparse.Namespace) -> int:
    from loom.k8s.manifests import uninject_text

    out, outcomes = uninject_text(_read_manifest(args.filename))
    if args.explain:
        for outcome in outcomes:
            verdict = "restored" if outcome.injected else "unchanged"
            print(f"{outcome.object}: {verdict}: {'; '.join(outcome.reasons)}", file=sys.stderr)
    sys.stdout.write(out)
    return 0


def run_webhook(args: argparse.Namespace) -> int:
    import asyncio
    import logging

    import uvloop

    from loom.cli.errors import UsageError
    from loom.k8s.values import read_values, settings_from
    from loom.k8s.webhook import WebhookConfig, serve
    from loom.k8s.webhook_certs import CertManagerConfig

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    settings = settings_from(read_values(args.values))
    manager = None
    if args.webhook_config:
        manager = CertManagerConfig(
            webhook_config=args.webhook_config,
            cert_dir=Path(args.cert_dir),
            service=args.service,
            namespace=args.service_namespace or os.environ.get("POD_NAMESPACE", "loom"),
            hosts=tuple(args.cert_host),
            validity=args.cert_validity,
            renew_before=args.cert_renew_before,
            check_interval=args.cert_check_interval,
            kubeconfig=args.kubeconfig,
        )
        cert, key = manager.cert_dir / "tls.crt", manager.cert_dir / "tls.key"
    elif args.tls_cert and args.tls_key:
        cert, key = Path(args.tls_cert), Path(args.tls_key)
    else:
        raise UsageError("loom k8s webhook: give --tls-cert and --tls-key, or --webhook-config")
    config = WebhookConfig(
        tls_cert=cert,
        tls_key=key,
        cert_manager=manager,
        listen=args.listen,
        namespace_labels_file=Path(args.namespace_labels_file)
        if args.namespace_labels_file
        else None,
        reload_interval=args.reload_interval,
    )
    with asyncio.Runner(loop_factory=uvloop.new_event_loop) as runner:
        runner.run(serve(config, settings))
    return 0


def run_connect_init(args: argparse.Namespace) -> int:
    import asyncio

    from loom.api.login import LoginSettings
    from loom.cli.api import tls_of
    from loom.k8s.connect_init import ConnectInitConfig, run
    from loom.k8s.errors import ConnectInitError
    from loom.redirect import RedirectConfig

    if not args.pod_name or not args.pod_namespace:
        raise ConnectInitError(
            "the pod's name and namespace are needed: --pod-name/--pod-namespace "
            "or POD_NAME/POD_NAMESPACE (downward API)"
        )
    redirect = RedirectConfig.from_flags(args.rest) if args.rest else None
    login = None
    if args.acl_auth_method:
        suffix = f"-{args.service_name}" if args.service_name else ""
        login = LoginSettings(
            auth_method=args.acl_auth_method,
            token_sink=Path(args.acl_token_sink or Path(args.output_dir) / f"acl-token{suffix}"),
            bearer_token_file=Path(args.bearer_token_file),
            token_owner=args.acl_token_owner,
        )
    config = ConnectInitConfig(
        http_addr=args.http_addr,
        tls=tls_of(args),
        pod_name=args.pod_name,
        pod_namespace=args.pod_namespace,
        output_dir=Path(args.output_dir),
        service_name=args.service_name,
        consul_namespace=args.consul_namespace,
        timeout=args.timeout,
        log_interval=args.log_interval,
        redirect=redirect,
        redirect_netns=args.netns,
        skip_redirect=args.skip_redirect,
        login=login,
    )

    def log(message: str) -> None:
        print(f"connect-init: {message}", file=sys.stderr, flush=True)

    asyncio.run(run(config, log))
    return 0


def run_controller(args: argparse.Namespace) -> int:
    import asyncio
    import logging
    import os
    import socket
    import uuid

    from loom.cli.api import tls_of
    from loom.k8s.controller_loop import ControllerConfig
    from loom.k8s.leader import ElectionConfig
    from loom.k8s.manager import ManagerConfig, run
    from loom.k8s.values import read_values, settings_from

    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    logging.getLogger("httpx2").setLevel(logging.WARNING)  # a line per Kubernetes request
    settings = settings_from(read_values(args.values))
    config = ControllerConfig(
        http_addr=args.http_addr,
        tls=tls_of(args),
        kubeconfig=args.kubeconfig,
        namespace=args.namespace,
        resync=args.resync,
    )
    election = None
    if args.leader_elect:
        pod = os.environ.get("POD_NAME") or socket.gethostname()
        election = ElectionConfig(
            name=args.leader_elect_resource_name,
            namespace=args.leader_elect_resource_namespace
            or os.environ.get("POD_NAMESPACE", "default"),
            identity=f"{pod}_{uuid.uuid4()}",
            lease_duration=args.leader_elect_lease_duration,
            renew_deadline=args.leader_elect_renew_deadline,
            retry_period=args.leader_elect_retry_period,
        )
    manager = ManagerConfig(crds=args.crds, datacenter=args.datacenter, election=election)
    try:
        asyncio.run(run(config, settings, manager))
    except KeyboardInterrupt:
        return 130
    return 0


def _true_false(text: str) -> bool:
    if text.lower() in ("true", "false"):
        return text.lower() == "true"
    raise argparse.ArgumentTypeError(f"{text!r} is not true or false")


def run_install(args: argparse.Namespace) -> int:
    import datetime
    import uuid

    from loom.cli.errors import UsageError
    from loom.k8s.certs import generate_server_tls, generate_tls, load_server_tls
    from loom.k8s.install import AclTokens, InstallSettings, render, with_install_defaults
    from loom.k8s.install_server import ServerSettings
    from loom.k8s.manifests import dump_documents
    from loom.k8s.values import read_values, settings_from

    values = read_values(args.values)
    if args.webhook_url:
        connect = dict(values.get("connectInject") or {})
        values = {**values, "connectInject": {**connect, "webhookUrl": args.webhook_url}}
    if args.tls is not None:
        glob = dict(values.get("global") or {})
        tls_values = dict(glob.get("tls") or {})
        values = {**values, "global": {**glob, "tls": {**tls_values, "enabled": args.tls}}}
    inject = settings_from(with_install_defaults(values))
    install = InstallSettings.from_values(values)
    now = datetime.datetime.now(datetime.UTC)
    files = (args.tls_cert_file, args.tls_key_file, args.tls_ca_file)
    if any(files) and not all(files):
        raise UsageError("install: give --tls-cert-file, --tls-key-file and --tls-ca-file together")
    if any(files) and not inject.server_ca.enabled:
        raise UsageError("install: the --tls-*-file flags need TLS on (not --tls=false)")
    server_tls = None
    if all(files):
        server_tls = load_server_tls(Path(files[0]), Path(files[1]), Path(files[2]))
    elif inject.server_ca.enabled and ServerSettings.from_values(values).enabled:
        server_tls = generate_server_tls(install.name, install.namespace, install.datacenter, now)
    tls = None
    if args.generate_certs:
        hosts = (install.webhook_host,) if install.webhook_host else ()
        tls = generate_tls(install.webhook_name, install.namespace, now, hosts)
    tokens = AclTokens(str(uuid.uuid4()), str(uuid.uuid4())) if install.manage_acls else None
    sys.stdout.write(dump_documents(render(values, inject, install, tls, tokens, server_tls)))
    return 0


def run_acl_init(args: argparse.Namespace) -> int:
    import asyncio

    from loom.k8s.acl_init import AclInitConfig, acl_init, read_secret_file

    config = AclInitConfig(
        http_addr=args.http_addr,
        management_token=read_secret_file(Path(args.token_file), "the management token"),
        kubernetes_host=args.kubernetes_host,
        ca_cert=read_secret_file(Path(args.kubernetes_ca_file), "the API server's CA") + "\n",
        reviewer_jwt=read_secret_file(Path(args.reviewer_jwt_file), "the reviewer's token"),
        controller_token=read_secret_file(
            Path(args.controller_token_file), "the controller's token"
        ),
        auth_method=args.auth_method_name,
        prefix=args.prefix,
        timeout=args.timeout,
    )
    asyncio.run(acl_init(config, lambda m: print(f"acl-init: {m}", file=sys.stderr, flush=True)))
    return 0
