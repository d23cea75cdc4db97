"""The endpoints controller's pure reconcile: pods + Services + catalog -> writes.

Pods are produced by the real injector (``plan_injection``), then given a status as the
kubelet would, so the controller reads exactly what the webhook writes.
"""

from __future__ import annotations

from typing import Any

from loom.inject import InjectSettings, NamespaceInfo, plan_injection
from loom.inject import annotations as ann
from loom.k8s.controller import META_HASH, Changes, reconcile

SETTINGS = InjectSettings()


def injected_pod(
    name: str,
    *,
    ip: str = "10.0.0.7",
    ready: bool = True,
    namespace: str = "default",
    labels: dict[str, str] | None = None,
    annotations: dict[str, str] | None = None,
    ports: tuple[int, ...] = (8080,),
    container: str | None = None,
) -> dict[str, Any]:
    """A pod as the API server holds it after the webhook injected it and it started; its
    container (the default Consul service name) and ``app`` label are ``container``, else
    the pod's name."""
    container = container or name
    pod = {
        "apiVersion": "v1",
        "kind": "Pod",
        "metadata": {
            "name": name,
            "namespace": namespace,
            "labels": labels or {"app": container},
            "annotations": {ann.CONNECT_INJECT: "true", **(annotations or {})},
        },
        "spec": {
            "containers": [
                {"name": container, "image": "app", "ports": [{"containerPort": p} for p in ports]}
            ]
        },
    }
    result = plan_injection(pod, NamespaceInfo(namespace), SETTINGS)
    assert result.pod is not None
    out = result.pod
    out["status"] = {
        "phase": "Running",
        "podIP": ip,
        "conditions": [{"type": "Ready", "status": "True" if ready else "False"}],
    }
    return out


def k8s_service(
    name: str, cluster_ip: str = "10.96.0.10", port: int = 80, target: int | str = 8080,
    selector: dict[str, str] | None = None, namespace: str = "default",
) -> dict[str, Any]:  # fmt: skip
    return {
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {"name": name, "namespace": namespace},
        "spec": {
            "selector": selector or {"app": name},
            "clusterIP": cluster_ip,
            "ports": [{"port": port, "targetPort": target, "protocol": "TCP"}],
        },
    }


def as_registered(changes: Changes) -> list[dict[str, Any]]:
    """What ``GET /v1/agent/services`` shows after the bodies were written (the fields the
    controller reads: ID, Service, Meta, Kind)."""
    out = []
    for body in changes.register:
        out.append({"ID": body["ID"], "Service": body["Name"], "Meta": dict(body["Meta"])})
        out.append(
            {
                "ID": body["ID"] + "-sidecar-proxy",
                "Service": body["Name"] + "-sidecar-proxy",
                "Kind": "connect-proxy",
                "Meta": dict(body["Meta"]),
            }
        )
    return out


def test_an_injected_ready_pod_is_registered_at_its_ip_with_pod_meta_and_a_sidecar() -> None:
    changes = reconcile([injected_pod("api")], [], [], SETTINGS)
    assert changes.deregister == [] and changes.skipped == []
    [body] = changes.register
    assert body["ID"] == "api-api"
    assert body["Name"] == "api"
    assert body["Address"] == "10.0.0.7"
    assert body["Port"] == 8080
    assert body["Meta"]["pod-name"] == "api"
    assert body["Meta"]["k8s-namespace"] == "default"
    assert body["Meta"]["managed-by"] == ann.MANAGED_BY_VALUE
    assert body["Connect"]["SidecarService"]["Port"] == 20000
    assert body["Check"]["Status"] == "passing"
    assert body["Connect"]["SidecarService"]["Check"]["Status"] == "passing"
    assert "TaggedAddresses" not in body


def test_the_selecting_service_s_cluster_ip_becomes_the_virtual_tagged_address() -> None:
    changes = reconcile([injected_pod("api")], [k8s_service("api", "10.96.3.4", 80)], [], SETTINGS)
    [body] = changes.register
    assert body["TaggedAddresses"] == {"virtual": {"Address": "10.96.3.4", "Port": 80}}


def test_a_service_that_does_not_select_the_pod_gives_no_virtual_address() -> None:
    other = k8s_service("api", selector={"app": "someone-else"})
    [body] = reconcile([injected_pod("api")], [other], [], SETTINGS).register
    assert "TaggedAddresses" not in body


def test_a_headless_service_gives_no_virtual_address() -> None:
    headless = k8s_service("api", cluster_ip="None")
    [body] = reconcile([injected_pod("api")], [headless], [], SETTINGS).register
    assert "TaggedAddresses" not in body


def test_a_multi_port_pod_gets_one_registration_per_service_each_with_its_cluster_ip() -> None:
    pod = injected_pod(
        "web-6d8f",
        labels={"app": "web"},
        annotations={
            ann.TRANSPARENT_PROXY: "false",
            ann.CONNECT_SERVICE: "web,web-admin",
            ann.CONNECT_SERVICE_PORT: "8080,9090",
        },
        ports=(8080, 9090),
    )
    services = [
        k8s_service("web", "10.96.0.1", 80, 8080, selector={"app": "web"}),
        k8s_service("web-admin", "10.96.0.2", 80, 9090, selector={"app": "web"}),
    ]
    web, admin = reconcile([pod], services, [], SETTINGS).register
    assert (web["ID"], web["Port"], web["Connect"]["SidecarService"]["Port"]) == (
        "web-6d8f-web", 8080, 20000,
    )  # fmt: skip
    assert (admin["ID"], admin["Port"], admin["Connect"]["SidecarService"]["Port"]) == (
        "web-6d8f-web-admin", 9090, 20001,
    )  # fmt: skip
    assert web["TaggedAddresses"]["virtual"]["Address"] == "10.96.0.1"
    assert admin["TaggedAddresses"]["virtual"]["Address"] == "10.96.0.2"
    assert web["Meta"]["pod-name"] == admin["Meta"]["pod-name"] == "web-6d8f"


def test_a_pod_that_was_not_injected_is_not_registered() -> None:
    pod = injected_pod("api")
    del pod["metadata"]["annotations"][ann.INJECT_STATUS]
    assert reconcile([pod], [], [], SETTINGS).register == []


def test_a_pod_without_an_ip_or_terminating_is_not_registered() -> None:
    no_ip = injected_pod("a")
    del no_ip["status"]["podIP"]
    terminating = injected_pod("b")
    terminating["metadata"]["deletionTimestamp"] = "2026-01-01T00:00:00Z"
    assert reconcile([no_ip, terminating], [], [], SETTINGS).register == []


def test_a_pod_in_a_denied_namespace_is_not_registered() -> None:
    settings = InjectSettings.from_values({"connectInject": {"k8sDenyNamespaces": ["blocked"]}})
    pod = injected_pod("api", namespace="blocked")
    assert reconcile([pod], [], [], settings).register == []


def test_the_registrations_of_a_pod_that_is_gone_are_deregistered() -> None:
    first = reconcile([injected_pod("api"), injected_pod("db", ip="10.0.0.8")], [], [], SETTINGS)
    changes = reconcile([injected_pod("db", ip="10.0.0.8")], [], as_registered(first), SETTINGS)
    assert changes.register == []
    assert changes.deregister == ["api-api"]


def test_registrations_of_others_are_never_deregistered() -> None:
    foreign = [{"ID": "vm-api", "Service": "api", "Meta": {"managed-by": "someone"}}]
    assert reconcile([], [], foreign, SETTINGS).deregister == []


def test_unchanged_pods_produce_no_writes() -> None:
    pods = [injected_pod("api")]
    services = [k8s_service("api")]
    first = reconcile(pods, services, [], SETTINGS)
    again = reconcile(pods, services, as_registered(first), SETTINGS)
    assert again.empty and first.register


def test_a_changed_cluster_ip_rewrites_the_registration() -> None:
    pods = [injected_pod("api")]
    first = reconcile(pods, [k8s_service("api", "10.96.0.10")], [], SETTINGS)
    again = reconcile(pods, [k8s_service("api", "10.96.0.99")], as_registered(first), SETTINGS)
    [body] = again.register
    assert body["TaggedAddresses"]["virtual"]["Address"] == "10.96.0.99"
    assert body["Meta"][META_HASH] != first.register[0]["Meta"][META_HASH]


def test_a_pod_that_is_not_ready_is_registered_with_a_critical_check() -> None:
    first = reconcile([injected_pod("api")], [], [], SETTINGS)
    changes = reconcile([injected_pod("api", ready=False)], [], as_registered(first), SETTINGS)
    [body] = changes.register
    assert body["Check"]["Status"] == "critical"
    assert body["Connect"]["SidecarService"]["Check"]["Status"] == "critical"


def test_a_pod_the_planner_refuses_is_skipped_with_the_reason_and_keeps_its_registrations() -> None:
    good = injected_pod("api")
    first = reconcile([good], [], [], SETTINGS)
    bad = injected_pod("api")
    original = bad["metadata"]["annotations"][ann.ORIGINAL_POD]
    bad["metadata"]["annotations"][ann.ORIGINAL_POD] = original.replace(
        f'"{ann.CONNECT_INJECT}":"true"',
        f'"{ann.CONNECT_INJECT}":"true","{ann.CONNECT_SERVICE_PROTOCOL}":"carrier-pigeon"',
    )
    changes = reconcile(
        [bad, injected_pod("db", ip="10.0.0.9")], [], as_registered(first), SETTINGS
    )
    [skipped] = changes.skipped
    assert skipped.pod == "default/api"
    assert ann.CONNECT_SERVICE_PROTOCOL in skipped.reason and "carrier-pigeon" in skipped.reason
    assert [b["ID"] for b in changes.register] == ["db-db"]
    assert changes.deregister == []


def test_a_gone_pods_login_tokens_are_found_by_method_and_pod_meta_only() -> None:
    from loom.k8s.controller import login_tokens_of, owners

    def token(accessor: str, description: str, method: str = "k8s") -> dict[str, Any]:
        return {"AccessorID": accessor, "Description": description, "AuthMethod": method}

    tokens = [
        token("a", 'token created via login: {"pod":"default/web-1"}'),
        token("b", 'token created via login: {"pod":"default/web-2"}'),
        token("c", 'token created via login: {"pod":"default/web-1"}', method="other"),
        token("d", "default/web-1"),  # made by hand, names the pod in its text only
        token("e", 'token created via login: {"pod":["default/web-1"]}'),
    ]
    assert login_tokens_of(tokens, "k8s", {"default/web-1"}) == ["a"]
    registered = [{"ID": "web-1-web", "Meta": {"pod-name": "web-1", "k8s-namespace": "default"}}]
    assert owners(registered, ["web-1-web", "unknown"]) == {"default/web-1"}
