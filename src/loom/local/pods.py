"""From checked manifests to what the local runtime runs: the injected pods (pure).

Every pod of ``loom local apply`` goes through the Kubernetes injector's ``plan_injection``,
the same call the admission webhook makes, and the local runtime executes the injected pod it
returns: its registrations and redirection (what the injected connect-init does), one
dataplane per injected sidecar container, and the app containers with the env the injector
set (``<NAME>_CONNECT_SERVICE_HOST/_PORT``). ``plan_pods`` also does the checks that need
the whole set and what was applied before (namespaces, service accounts, images, config
references), so a bad manifest is refused with one line before anything is made.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from loom.inject import (
    InjectError,
    InjectionResult,
    InjectSettings,
    NamespaceInfo,
    plan_injection,
)
from loom.inject.init_container import INIT_CONTAINER
from loom.inject.sidecar import SIDECAR_CONTAINER
from loom.local.images import (
    ImageMap,
    PodContext,
    container_argv,
    container_env,
    image_name,
    secret_data,
)
from loom.local.manifests import DesiredPod, KubeObject, ManifestSet
from loom.local.volumes import Mount, VolumeFile, container_mounts, volume_files

SA_ANNOTATION = "kubernetes.io/service-account.name"


@dataclass(frozen=True)
class AppContainer:
    """One app container as the local runtime starts it."""

    name: str
    argv: tuple[str, ...]
    spec: Mapping[str, Any]
    """The injected container (env, ports, probes)."""
    mounts: tuple[Mount, ...] = ()
    """Its volume mounts (``volumes.py``)."""


@dataclass(frozen=True)
class PodRun:
    """A pod ready to run: the injector's result and its app containers."""

    desired: DesiredPod
    injection: InjectionResult
    containers: tuple[AppContainer, ...]
    volumes: Mapping[str, list[VolumeFile]]
    """The pod's volumes and their projected files."""
    accounts: Mapping[str, str]
    """Consul service -> the service account it logs in as: the pod's, or for a multi-port
    pod the account of the service-account-token Secret named like the service (seed 000)."""

    @property
    def pod(self) -> Mapping[str, Any]:
        """The pod as Kubernetes would run it (the injected copy when injected)."""
        return self.injection.pod if self.injection.pod is not None else self.desired.pod


@dataclass(frozen=True)
class Known:
    """What the applied state and this manifest set define, by ``namespace/name``."""

    namespaces: Mapping[str, Mapping[str, str]]
    """Namespace name -> its labels (``default`` always exists)."""
    accounts: Collection[str]
    config_maps: Mapping[str, Mapping[str, str]]
    secrets: Mapping[str, Mapping[str, str]]
    token_accounts: Mapping[str, str]
    """``namespace/secret`` -> the account a service-account-token Secret stands for."""

    @staticmethod
    def of(objects: Sequence[KubeObject]) -> Known:
        """From the objects (applied before and applied now; later ones win)."""
        namespaces: dict[str, Mapping[str, str]] = {"default": {}}
        accounts, maps, secrets, tokens = set(), {}, {}, {}
        for o in objects:
            key = f"{o.namespace}/{o.name}"
            meta = o.body.get("metadata") or {}
            if o.kind == "Namespace":
                namespaces[o.name] = dict(meta.get("labels") or {})
            elif o.kind == "ServiceAccount":
                accounts.add(key)
            elif o.kind == "ConfigMap":
                maps[key] = {k: str(v) for k, v in (o.body.get("data") or {}).items()}
            elif o.kind == "Secret":
                secrets[key] = secret_data(o.body)
                if o.body.get("type") == "kubernetes.io/service-account-token":
                    account = (meta.get("annotations") or {}).get(SA_ANNOTATION)
                    if isinstance(account, str):
                        tokens[key] = account
        return Known(namespaces, accounts, maps, secrets, tokens)

    def in_namespace(self, table: Mapping[str, Mapping[str, str]], ns: str) -> dict[str, Any]:
        return {k.split("/", 1)[1]: v for k, v in table.items() if k.startswith(ns + "/")}


def check_objects(mset: ManifestSet, known: Known) -> None:
    """Namespaces exist, service-account-token Secrets name an account."""
    for obj in mset.objects:
        if obj.namespace and obj.namespace not in known.namespaces:
            raise obj.fail(f"namespace {obj.namespace} does not exist (apply a Namespace first)")
        if obj.kind == "Secret" and obj.body.get("type") == "kubernetes.io/service-account-token":
            annotations = (obj.body.get("metadata") or {}).get("annotations") or {}
            account = annotations.get(SA_ANNOTATION)
            if not account:
                raise obj.fail("a service-account-token Secret needs the annotation "
                               "kubernetes.io/service-account.name")  # fmt: skip
            if f"{obj.namespace}/{account}" not in known.accounts:
                raise obj.fail(f"ServiceAccount {account} does not exist")


def plan_pods(
    mset: ManifestSet,
    known: Known,
    images: ImageMap,
    settings: InjectSettings,
    missing_programs: Collection[str] = (),
) -> list[PodRun]:
    """Each desired pod injected and its containers resolved, or the first refusal."""
    check_objects(mset, known)
    owners = {o.key: o for o in mset.objects}
    out = []
    for desired in mset.pods:
        obj = owners[desired.owner] if desired.owner else owners[f"Pod/{desired.namespace}/" +
                                                                  desired.name]  # fmt: skip
        account = desired.service_account
        if account != "default" and f"{desired.namespace}/{account}" not in known.accounts:
            raise obj.fail(f"ServiceAccount {account} does not exist (serviceAccountName)")
        labels = known.namespaces.get(desired.namespace, {})
        try:
            result = plan_injection(desired.pod, NamespaceInfo(desired.namespace, labels), settings)
        except InjectError as exc:
            raise obj.fail(f"the injector refused it: {exc}") from exc
        pod = result.pod if result.pod is not None else desired.pod
        containers = []
        ctx = pod_context(desired, known, "0.0.0.0")
        where = f"{obj.kind}/{obj.name} ({obj.source})"
        volumes = volume_files(pod["spec"], ctx.config_maps, ctx.secrets, where)
        for c in pod["spec"]["containers"]:
            if str(c["name"]).startswith(SIDECAR_CONTAINER) and result.inject:
                continue  # the dataplane: the runtime starts `loom dataplane` for it
            program = images.lookup(str(c["image"]))
            if program is None:
                raise obj.fail(
                    f"container {c['name']}: image {c['image']} maps to no local program "
                    f"(give --image-map {image_name(str(c['image']))}=COMMAND)"
                )
            if program.required is not None and program.required in missing_programs:
                raise obj.fail(f"container {c['name']}: image {c['image']} needs "
                               f"{program.required}, which is not installed")  # fmt: skip
            container_env(c, ctx)  # unresolvable references are refused now
            mounts = tuple(container_mounts(c, volumes, f"{where}: container {c['name']}"))
            argv = tuple(container_argv(c, program))
            containers.append(AppContainer(str(c["name"]), argv, c, mounts))
        for c in desired.pod["spec"].get("initContainers") or []:
            raise obj.fail(f"init container {c.get('name')}: loom local runs only the "
                           "injector's init containers")  # fmt: skip
        accounts: dict[str, str] = {}
        for service in result.plan.services if result.plan else ():
            token = known.token_accounts.get(f"{desired.namespace}/{service.name}")
            multi = result.plan is not None and result.plan.multi_port
            accounts[service.name] = token if multi and token else account
        out.append(PodRun(desired, result, tuple(containers), volumes, accounts))
    return out


def pod_context(desired: DesiredPod, known: Known, ip: str) -> PodContext:
    return PodContext(
        pod_name=desired.name,
        namespace=desired.namespace,
        pod_ip=ip,
        service_account=desired.service_account,
        config_maps=known.in_namespace(known.config_maps, desired.namespace),
        secrets=known.in_namespace(known.secrets, desired.namespace),
    )


def init_containers(pod: Mapping[str, Any]) -> list[str]:
    """The injected init containers (connect-init), by name, for ``describe``."""
    return [str(c["name"]) for c in (pod.get("spec") or {}).get("initContainers") or []
            if str(c.get("name", "")).startswith(INIT_CONTAINER)]  # fmt: skip


def headless_hosts(
    services: Sequence[KubeObject], pods: Sequence[tuple[str, str, Mapping[str, str], str]]
) -> list[tuple[str, str]]:
    """(address, name) for kube-dns's headless-Service names: ``<svc>.<ns>.svc.cluster.local``
    -> every selected pod, ``<pod>.<svc>.<ns>.svc.cluster.local`` -> that pod. ``pods`` are
    (name, namespace, labels, address)."""
    out = []
    for svc in services:
        spec = svc.body.get("spec") or {}
        selector = spec.get("selector") or {}
        if spec.get("clusterIP") != "None" or not selector:
            continue
        domain = f"{svc.name}.{svc.namespace}.svc.cluster.local"
        for name, ns, labels, ip in sorted(pods):
            if ns == svc.namespace and all(labels.get(k) == v for k, v in selector.items()):
                out += [(ip, domain), (ip, f"{name}.{domain}")]
    return out
