from __future__ import annotations

import copy
import json

import pytest

from loom.inject import (
    PROXY_UID,
    InjectionRefused,
    InjectSettings,
    InvalidPod,
    NamespaceInfo,
    plan_injection,
    plan_workload,
)
from loom.inject.annotations import ORIGINAL_POD
from loom.redirect import RedirectConfig

DEFAULT_NS = NamespaceInfo("default")


def local_pod(port: int | None = 8080, **annotations: str) -> dict:
    """The minimal pod `loom local run NAME --port P --annotation K=V` builds."""
    container: dict = {"name": "static-server"}
    if port is not None:
        container["ports"] = [{"containerPort": port}]
    return {
        "metadata": {
            "name": "static-server",
            "annotations": {
                f"consul.hashicorp.com/{k.replace('_', '-')}": v for k, v in annotations.items()
            },
        },
        "spec": {"containers": [container]},
    }


def test_the_planner_never_mutates_its_input_and_is_deterministic() -> None:
    pod = local_pod(connect_inject="true", connect_service_upstreams="web:1234")
    before = copy.deepcopy(pod)
    first = plan_injection(pod, DEFAULT_NS, InjectSettings())
    second = plan_injection(pod, DEFAULT_NS, InjectSettings())
    assert pod == before
    assert first == second
    assert json.loads(first.pod["metadata"]["annotations"][ORIGINAL_POD]) == {
        "metadata": before["metadata"],
        "spec": before["spec"],
    }


def test_a_local_pod_with_defaults_gets_transparent_proxy_with_the_proxy_uid_excluded() -> None:
    plan = plan_workload(local_pod(), DEFAULT_NS, InjectSettings())
    assert [(s.name, s.port, s.proxy_port) for s in plan.services] == [
        ("static-server", 8080, 20000)
    ]
    assert plan.transparent_proxy
    assert plan.redirect == RedirectConfig(PROXY_UID, 20000, 15001, dns_port=15053)
    assert plan.redirect.to_flags() == [
        "--proxy-uid=5995",
        "--proxy-inbound-port=20000",
        "--proxy-outbound-port=15001",
        "--dns-port=15053",
    ]


def test_redirect_flags_carry_every_exclusion_in_order() -> None:
    plan = RedirectConfig(5995, 20000, 15001, (8081, 20300), (5432,), ("10.0.0.0/8",), (1001,))
    assert plan.to_flags() == [
        "--proxy-uid=5995",
        "--proxy-inbound-port=20000",
        "--proxy-outbound-port=15001",
        "--exclude-inbound-port=8081",
        "--exclude-inbound-port=20300",
        "--exclude-outbound-port=5432",
        "--exclude-outbound-cidr=10.0.0.0/8",
        "--exclude-uid=1001",
    ]


def test_exclusions_keep_their_spelling_and_order_each_value_once() -> None:
    pod = local_pod(
        connect_inject="true",
        transparent_proxy_exclude_inbound_ports="9090, 22,9090",
        transparent_proxy_exclude_outbound_cidrs="10.0.0.9/8, 1.2.3.4,fd00::/8,1.2.3.4",
        transparent_proxy_exclude_uids="1001,0",
    )
    redirect = plan_workload(pod, DEFAULT_NS, InjectSettings()).redirect
    assert redirect is not None
    assert redirect.exclude_inbound_ports == (9090, 22)
    assert redirect.exclude_outbound_cidrs == ("10.0.0.9/8", "1.2.3.4", "fd00::/8")
    assert redirect.exclude_uids == (1001, 0)


@pytest.mark.parametrize(
    ("annotation", "value", "why"),
    [
        ("transparent-proxy-exclude-outbound-cidrs", "10.0.0.0/8,example.com",
         "'example.com' is not an IP address or CIDR"),
        ("transparent-proxy-exclude-uids", "1001,4294967295",
         "4294967295 is not a user ID (0-4294967294)"),
        ("transparent-proxy-exclude-uids", "1001,root", "'root' is not a numeric user ID"),
    ],
)  # fmt: skip
@pytest.mark.parametrize("tproxy", ["true", "false"])
def test_a_bad_exclusion_is_refused_naming_its_annotation_with_or_without_tproxy(
    annotation: str, value: str, why: str, tproxy: str
) -> None:
    pod = local_pod(connect_inject="true", transparent_proxy=tproxy)
    pod["metadata"]["annotations"][f"consul.hashicorp.com/{annotation}"] = value
    with pytest.raises(InjectionRefused) as info:
        plan_workload(pod, DEFAULT_NS, InjectSettings())
    assert str(info.value) == f"consul.hashicorp.com/{annotation}={value!r}: {why}"


def test_the_multi_port_example_plans_two_services_with_upstreams_on_the_first_only() -> None:
    pod = local_pod(
        port=None,
        transparent_proxy="false",
        connect_service="web,web-admin",
        connect_service_port="8080,9090",
        connect_service_upstreams="db:5432",
    )
    plan = plan_workload(pod, DEFAULT_NS, InjectSettings())
    assert [(s.name, s.port, s.proxy_port, s.suffix) for s in plan.services] == [
        ("web", 8080, 20000, "-web"),
        ("web-admin", 9090, 20001, "-web-admin"),
    ]
    assert plan.multi_port and plan.redirect is None
    assert [u.name for u in plan.upstreams] == ["db"]


def test_a_client_without_ports_has_no_service_port() -> None:
    plan = plan_workload(local_pod(port=None), DEFAULT_NS, InjectSettings())
    assert plan.services[0].port is None


def test_the_namespace_label_decides_transparent_proxy_when_the_pod_does_not() -> None:
    ns = NamespaceInfo("team", {"consul.hashicorp.com/transparent-proxy": "false"})
    assert not plan_workload(local_pod(), ns, InjectSettings()).transparent_proxy
    pod = local_pod(transparent_proxy="true")
    assert plan_workload(pod, ns, InjectSettings()).transparent_proxy


def test_decisions_carry_their_reasons() -> None:
    settings = InjectSettings(default_inject=True, deny_namespaces=("blocked",))
    result = plan_injection(local_pod(), NamespaceInfo("blocked"), settings)
    assert not result.inject and result.pod is None
    assert result.reasons == ("namespace blocked is in connectInject.k8sDenyNamespaces",)
    result = plan_injection(local_pod(), DEFAULT_NS, settings)
    assert result.inject
    assert result.reasons[0].startswith("connectInject.default is true")


@pytest.mark.parametrize(
    "pod",
    [
        {"metadata": {"annotations": {"consul.hashicorp.com/connect-inject": "true"}}},
        {
            "metadata": {"annotations": {"consul.hashicorp.com/connect-inject": "true"}},
            "spec": {"containers": [{"image": "x"}]},
        },
    ],
)
def test_a_pod_without_named_containers_is_invalid(pod) -> None:
    with pytest.raises(InvalidPod, match=r"spec\.containers"):
        plan_injection(pod, DEFAULT_NS, InjectSettings())


def test_a_pod_already_holding_an_injected_container_name_is_invalid() -> None:
    pod = local_pod(connect_inject="true")
    pod["spec"]["containers"].append({"name": "loom-dataplane", "image": "x"})
    with pytest.raises(InvalidPod, match="already named loom-dataplane"):
        plan_injection(pod, DEFAULT_NS, InjectSettings())


def test_a_pod_with_two_containers_of_one_name_is_invalid_rather_than_half_rewritten() -> None:
    pod = local_pod(connect_inject="true", transparent_proxy="true")
    first = pod["spec"]["containers"][0]
    first["readinessProbe"] = {"httpGet": {"path": "/", "port": 8080}}
    pod["spec"]["containers"].append({"name": first["name"], "image": "x"})
    with pytest.raises(InvalidPod, match=f"two containers are named '{first['name']}'"):
        plan_injection(pod, DEFAULT_NS, InjectSettings())


def test_the_webhooks_shared_result_leaves_the_input_alone_and_the_default_one_is_independent():
    pod = local_pod(connect_inject="true", transparent_proxy="false")
    pod["spec"]["containers"][0]["livenessProbe"] = {"httpGet": {"path": "/", "port": 8080}}
    before = copy.deepcopy(pod)
    shared = plan_injection(pod, DEFAULT_NS, InjectSettings(), share_unchanged=True).pod
    independent = plan_injection(pod, DEFAULT_NS, InjectSettings()).pod
    assert shared == independent and pod == before
    assert shared["spec"]["containers"][0] is pod["spec"]["containers"][0]
    assert independent["spec"]["containers"][0] is not pod["spec"]["containers"][0]
    independent["spec"]["containers"][0]["livenessProbe"]["httpGet"]["port"] = 1
    assert pod == before


def test_the_pods_own_init_containers_get_the_upstream_env_vars_and_connect_init_does_not():
    pod = local_pod(connect_inject="true", connect_service_upstreams="static-server:1234")
    pod["spec"]["initContainers"] = [{"name": "migrate", "image": "busybox"}]
    before = copy.deepcopy(pod)
    out = plan_injection(pod, DEFAULT_NS, InjectSettings(), share_unchanged=True).pod
    migrate, connect_init = out["spec"]["initContainers"]
    assert migrate["env"] == [
        {"name": "STATIC_SERVER_CONNECT_SERVICE_HOST", "value": "127.0.0.1"},
        {"name": "STATIC_SERVER_CONNECT_SERVICE_PORT", "value": "1234"},
    ]
    names = {e["name"] for e in connect_init.get("env", [])}
    assert "STATIC_SERVER_CONNECT_SERVICE_PORT" not in names
    assert pod == before


@pytest.mark.parametrize("level", ["baseline", "restricted"])
def test_transparent_proxy_in_a_baseline_or_restricted_namespace_is_refused_naming_the_way_out(
    level,
):
    ns = NamespaceInfo("shop", {"pod-security.kubernetes.io/enforce": level})
    with pytest.raises(InjectionRefused) as info:
        plan_injection(local_pod(connect_inject="true"), ns, InjectSettings())
    message = str(info.value)
    assert message.startswith(
        f"namespace shop label pod-security.kubernetes.io/enforce='{level}': PodSecurity"
    )
    assert "NET_ADMIN" in message and "transparent proxy is enabled by cluster default" in message
    assert 'consul.hashicorp.com/transparent-proxy: "false"' in message
    off = local_pod(connect_inject="true", transparent_proxy="false")
    assert plan_injection(off, ns, InjectSettings()).inject


def test_a_privileged_pod_security_namespace_keeps_transparent_proxy() -> None:
    ns = NamespaceInfo("shop", {"pod-security.kubernetes.io/enforce": "privileged"})
    plan = plan_workload(local_pod(connect_inject="true"), ns, InjectSettings())
    assert plan.transparent_proxy
