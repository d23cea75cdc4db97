"""``loom doctor``'s Kubernetes checks: is the injection path of ``loom install`` working?

Run when a kubeconfig is given (``--kubeconfig``, or ``--k8s`` for the environment's: in-cluster
or ``~/.kube/config``), or inside a pod. In order, each one line of ``loom doctor``'s report:

1. the MutatingWebhookConfiguration exists (and has webhooks);
2. its ``caBundle`` verifies the certificate the webhook serves, as the API server would (a TLS
   handshake trusting only the bundle, with the name checked), and that certificate is far
   from expiry (from outside the cluster a Service endpoint is usually unreachable: then the
   webhook's TLS Secret is checked instead, when there is one);
3. the webhook answers: a server-side dry-run pod create in an opted-in namespace comes back
   with ``connect-inject-status: injected`` (nothing is stored);
4. the controller runs: its Deployment has a ready replica, or its leader Lease is held and
   renewed within its duration;
5. opted-in pods (``connect-inject: "true"``) in namespaces the webhook selects carry
   ``connect-inject-status: injected``.

Kubernetes is spoken through lightkube's synchronous client; its errors are turned into
failed checks with the fix, never raised. Imported only when ``loom doctor`` runs.
"""

from __future__ import annotations

import base64
import datetime as dt
import socket
import ssl
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, cast
from urllib.parse import urlsplit

from cryptography import x509
from lightkube import Client, KubeConfig
from lightkube.core.exceptions import ApiError
from lightkube.generic_resource import create_global_resource, create_namespaced_resource
from lightkube.resources.apps_v1 import Deployment
from lightkube.resources.core_v1 import Namespace, Pod, Secret

from loom.cli.doctor import CERT_WARN_DAYS, Check
from loom.inject.annotations import CONNECT_INJECT, INJECT_STATUS, INJECT_STATUS_INJECTED
from loom.k8s.install import InstallSettings
from loom.k8s.install_webhook import COMPONENT_LABEL

MutatingWebhookConfiguration = create_global_resource(
    "admissionregistration.k8s.io", "v1", "MutatingWebhookConfiguration",
    "mutatingwebhookconfigurations",
)  # fmt: skip
Lease = create_namespaced_resource("coordination.k8s.io", "v1", "Lease", "leases")

APPLY_FIX = "`loom install | kubectl apply -f -`"


@dataclass(frozen=True)
class KubeTarget:
    """Which cluster, and which installation in it, to check."""

    kubeconfig: str | None
    """Kubeconfig file; None: the environment's (in-cluster, else ``~/.kube/config``)."""
    name: str = "loom"
    """``global.name`` of the installation (prefix of its resource names)."""
    namespace: str = "loom"
    """``global.namespace``: where the webhook and controller run."""
    inject_namespace: str = "default"
    """An opted-in namespace for the dry-run pod."""


def _message(exc: Exception) -> str:
    if isinstance(exc, ApiError):
        return f"{exc.status.code} {exc.status.message}"
    return str(exc).splitlines()[0] if str(exc) else type(exc).__name__


def kube_checks(target: KubeTarget) -> Iterator[Check]:
    """The checks, in order; a later one is skipped (-) when what it needs failed."""
    where = target.kubeconfig or "the environment"
    try:
        config = KubeConfig.from_file(target.kubeconfig) if target.kubeconfig else (
            KubeConfig.from_env())  # fmt: skip
        client = Client(config=config)
        client.get(Namespace, target.namespace)
    except ApiError as exc:
        if exc.status.code != 404:
            yield Check("kubernetes API", False, f"{where}: {_message(exc)}",
                        "give a kubeconfig allowed to read the cluster (--kubeconfig)")  # fmt: skip
            return
        yield Check("kubernetes API", False, f"namespace {target.namespace} does not exist",
                    f"{APPLY_FIX}, or give --k8s-namespace")  # fmt: skip
        return
    except Exception as exc:  # a bad kubeconfig, an unreachable API server
        yield Check("kubernetes API", False, f"{where}: {_message(exc)}",
                    "give a working kubeconfig (--kubeconfig), or start the cluster")  # fmt: skip
        return
    single = config.get()
    yield Check("kubernetes API", True, f"{single.cluster.server if single else where} answers")
    install = InstallSettings(name=target.name, namespace=target.namespace)
    hooks = _webhook_configuration(client, install)
    yield hooks[0]
    webhooks = hooks[1]
    if webhooks is None:
        yield Check("webhook caBundle", None, "no webhook configuration")
    else:
        yield _ca_bundles(client, install, webhooks)
    yield _dry_run(client, target) if webhooks is not None else Check(
        "webhook answers", None, "no webhook configuration")  # fmt: skip
    yield _controller(client, install)
    yield _injected_pods(client, webhooks or [])


def _webhook_configuration(
    client: Client, install: InstallSettings
) -> tuple[Check, list[dict[str, Any]] | None]:
    name = "webhook configuration"
    try:
        found: Any = client.get(MutatingWebhookConfiguration, install.webhook_name)
    except ApiError as exc:
        if exc.status.code == 404:
            return Check(name, False, f"no MutatingWebhookConfiguration {install.webhook_name}: "
                         "pods are not injected", APPLY_FIX), None  # fmt: skip
        return Check(name, False, _message(exc), "give a kubeconfig allowed to read it"), None
    webhooks: list[dict[str, Any]] = found.to_dict().get("webhooks") or []
    if not webhooks:
        return Check(name, False, f"{install.webhook_name} has no webhooks", APPLY_FIX), None
    return Check(name, True, f"{install.webhook_name} ({len(webhooks)} webhooks)"), webhooks


def _endpoint(hook: dict[str, Any]) -> tuple[str, int]:
    client = hook.get("clientConfig") or {}
    if client.get("url"):
        url = urlsplit(client["url"])
        return url.hostname or "", url.port or 443
    service = client.get("service") or {}
    return f"{service.get('name')}.{service.get('namespace')}.svc", int(service.get("port", 443))


def _served_certificate(host: str, port: int, bundle_pem: str) -> tuple[x509.Certificate, str]:
    """The certificate served at host:port, and why the bundle does not verify it ('' if it
    does). OSError when nothing answers there."""
    loose = ssl.create_default_context()
    loose.check_hostname, loose.verify_mode = False, ssl.CERT_NONE
    with socket.create_connection((host, port), timeout=5) as raw, loose.wrap_socket(
        raw, server_hostname=host) as tls:  # fmt: skip
        der = tls.getpeercert(binary_form=True)
    if der is None:
        raise OSError(f"{host}:{port} sent no certificate")
    served = x509.load_der_x509_certificate(der)
    strict = ssl.create_default_context(cadata=bundle_pem)
    try:
        with socket.create_connection((host, port), timeout=5) as raw, strict.wrap_socket(
            raw, server_hostname=host):  # fmt: skip
            pass
    except ssl.SSLCertVerificationError as exc:
        return served, exc.verify_message or str(exc)
    return served, ""


def _signed_by(cert: x509.Certificate, bundle: list[x509.Certificate]) -> bool:
    for ca in bundle:
        try:
            cert.verify_directly_issued_by(ca)
        except Exception:  # InvalidSignature, or a key type that cannot sign
            continue
        return True
    return False


def _ca_bundles(client: Client, install: InstallSettings, hooks: list[dict[str, Any]]) -> Check:
    """Each distinct (caBundle, endpoint) of the webhooks checked: the first failure, if any."""
    distinct: dict[tuple[str, str, int], dict[str, Any]] = {}
    for hook in hooks:
        text = (hook.get("clientConfig") or {}).get("caBundle") or ""
        distinct.setdefault((text, *_endpoint(hook)), hook)
    results = [_ca_bundle(client, install, hook) for hook in distinct.values()]
    return next((r for r in results if r.ok is False), results[0])


def _ca_bundle(client: Client, install: InstallSettings, hook: dict[str, Any]) -> Check:
    name = "webhook caBundle"
    text = (hook.get("clientConfig") or {}).get("caBundle") or ""
    try:
        bundle_pem = base64.b64decode(text).decode()
        bundle = x509.load_pem_x509_certificates(bundle_pem.encode()) if text else []
    except ValueError as exc:
        return Check(name, False, f"unreadable caBundle ({exc})",
                     "`loom install --generate-certs`, or let the webhook install its CA "
                     "(--webhook-config)")  # fmt: skip
    if not bundle:
        return Check(name, False, "the webhook configuration has no caBundle: the API server "
                     "cannot call the webhook", "start the webhook with --webhook-config "
                     f"{install.webhook_name} (it installs its CA), or cert-manager")  # fmt: skip
    host, port = _endpoint(hook)
    mismatch = (
        "the webhook's certificate is not signed by the caBundle",
        "restart the webhook so it installs its CA again (--webhook-config), or put "
        "the CA of its certificate in caBundle (`loom install --generate-certs`)",
    )
    try:
        served, why = _served_certificate(host, port, bundle_pem)
        source = f"served at {host}:{port}"
        if why:
            return Check(name, False, f"{mismatch[0]} {source} ({why})", mismatch[1])
    except OSError as exc:  # outside the cluster: the Service is out of reach
        try:
            secret: Any = client.get(
                Secret,
                install.secret_name or f"{install.webhook_name}-tls",
                namespace=install.namespace,
            )
            served = x509.load_pem_x509_certificate(base64.b64decode(secret.data["tls.crt"]))
        except (ApiError, KeyError, TypeError, ValueError):
            return Check(name, None, f"{len(bundle)} CA(s); the webhook at {host}:{port} "
                         f"cannot be reached from here ({exc}) and it has no TLS Secret: "
                         "run `loom doctor` in the cluster to check the certificate")  # fmt: skip
        source = f"in Secret {install.namespace}/{secret.metadata.name}"
        if not _signed_by(served, bundle):
            return Check(name, False, f"{mismatch[0]} {source}", mismatch[1])
    left = served.not_valid_after_utc - dt.datetime.now(dt.UTC)
    detail = (
        f"verifies the webhook's certificate {source}, which expires "
        f"{served.not_valid_after_utc:%Y-%m-%d} ({left.days} days)"
    )
    if left < dt.timedelta(days=CERT_WARN_DAYS):
        return Check(name, False, detail, "rotate the webhook certificate (restart the webhook "
                     "with --webhook-config, or `loom install --generate-certs`)")  # fmt: skip
    return Check(name, True, detail)


def _dry_run(client: Client, target: KubeTarget) -> Check:
    name = "webhook answers"
    pod = cast(Pod, Pod.from_dict({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {"name": f"loom-doctor-{uuid.uuid4().hex[:8]}",
                     "namespace": target.inject_namespace,
                     "annotations": {CONNECT_INJECT: "true"}},
        "spec": {"containers": [{"name": "app", "image": "busybox"}]},
    }))  # fmt: skip
    try:
        made: dict[str, Any] = client.create(pod, dry_run=True).to_dict()
    except ApiError as exc:
        return Check(name, False, f"a dry-run pod in {target.inject_namespace} was refused: "
                     f"{_message(exc)}", "see the webhook's log (kubectl -n "
                     f"{target.namespace} logs deploy/{target.name}-connect-injector)")  # fmt: skip
    except Exception as exc:
        return Check(name, False, _message(exc), "check the API server is reachable")
    marks = _marks(made)
    if marks.get(INJECT_STATUS) != INJECT_STATUS_INJECTED:
        return Check(name, False, f"a dry-run pod in {target.inject_namespace} came back "
                     "not injected", "opt the namespace in (connectInject.k8sAllowNamespaces), "
                     "or check the webhook's namespaceSelector and failurePolicy")  # fmt: skip
    containers = [c["name"] for c in (made.get("spec") or {}).get("containers") or []]
    return Check(name, True, f"a dry-run pod in {target.inject_namespace} comes back injected "
                 f"(containers {', '.join(containers)})")  # fmt: skip


def _controller(client: Client, install: InstallSettings) -> Check:
    name, ns = "controller", install.namespace
    why = []
    try:
        deploy: Any = client.get(Deployment, install.controller_name, namespace=ns)
        ready = (deploy.status.readyReplicas or 0) if deploy.status else 0
        if ready:
            return Check(name, True, f"deployment {ns}/{install.controller_name}: {ready} ready")
        why.append(f"deployment {ns}/{install.controller_name} has no ready replica")
    except ApiError as exc:
        why.append(f"deployment {ns}/{install.controller_name}: {_message(exc)}")
    try:
        lease: Any = client.get(Lease, install.leader_lease, namespace=ns)
        spec = lease.to_dict().get("spec") or {}
        holder, renewed = spec.get("holderIdentity") or "", spec.get("renewTime")
        duration = float(spec.get("leaseDurationSeconds") or 15)
        if holder and renewed:
            age = (dt.datetime.now(dt.UTC) - dt.datetime.fromisoformat(renewed)).total_seconds()
            if age <= duration:
                return Check(name, True, f"lease {ns}/{install.leader_lease} held by {holder} "
                             f"(renewed {max(age, 0):.0f} s ago)")  # fmt: skip
            why.append(f"lease {ns}/{install.leader_lease} not renewed for {age:.0f} s")
        else:
            why.append(f"lease {ns}/{install.leader_lease} has no holder")
    except ApiError as exc:
        why.append(f"lease {ns}/{install.leader_lease}: {_message(exc)}")
    except ValueError as exc:
        why.append(f"lease {ns}/{install.leader_lease}: unreadable renewTime ({exc})")
    return Check(name, False, "; ".join(why), f"kubectl -n {ns} describe deploy "
                 f"{install.controller_name}, and its logs")  # fmt: skip


def _marks(obj: dict[str, Any]) -> dict[str, str]:
    """An object's labels and annotations together (the injection status is in both)."""
    meta = obj.get("metadata") or {}
    return {**(meta.get("labels") or {}), **(meta.get("annotations") or {})}


def _selects(selector: dict[str, Any], labels: dict[str, str]) -> bool:
    """A label selector (matchLabels and matchExpressions) matched against ``labels``."""
    if any(labels.get(k) != v for k, v in (selector.get("matchLabels") or {}).items()):
        return False
    for expr in selector.get("matchExpressions") or []:
        key, op, values = expr["key"], expr["operator"], expr.get("values") or []
        if ((op == "In" and labels.get(key) not in values)
                or (op == "NotIn" and key in labels and labels[key] in values)
                or (op == "Exists" and key not in labels)
                or (op == "DoesNotExist" and key in labels)):  # fmt: skip
            return False
    return True


def _injected_pods(client: Client, webhooks: list[dict[str, Any]]) -> Check:
    name = "injected pods"
    if not webhooks:
        return Check(name, None, "no webhook configuration")
    try:
        namespaces = {
            m["name"]: m.get("labels") or {}
            for m in (n.to_dict()["metadata"] for n in client.list(Namespace))
        }
        opted = {
            ns
            for ns, labels in namespaces.items()
            if any(_selects(h.get("namespaceSelector") or {}, labels) for h in webhooks)
        }
        pods = [p.to_dict()["metadata"] for p in client.list(Pod, namespace="*")]
        pods = [m for m in pods if m.get("namespace") in opted]
    except ApiError as exc:
        return Check(name, False, _message(exc), "give a kubeconfig allowed to list pods")
    wanted = [m for m in pods if (m.get("annotations") or {}).get(CONNECT_INJECT) == "true"
              and COMPONENT_LABEL not in (m.get("labels") or {})]  # fmt: skip
    missing = [
        f"{m['namespace']}/{m['name']}"
        for m in wanted
        if _marks({"metadata": m}).get(INJECT_STATUS) != INJECT_STATUS_INJECTED
    ]
    if missing:
        shown = ", ".join(missing[:5]) + (f" and {len(missing) - 5} more" if len(missing) > 5
                                          else "")  # fmt: skip
        return Check(name, False, f"{len(missing)} of {len(wanted)} opted-in pods not injected: "
                     f"{shown}", "recreate them once the webhook answers "
                     "(kubectl rollout restart of their workloads)")  # fmt: skip
    return Check(name, True, f"{len(wanted)} opted-in pods in {len(opted)} namespaces, all "
                 "injected")  # fmt: skip
