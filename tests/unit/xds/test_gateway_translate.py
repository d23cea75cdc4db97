"""A mesh gateway's resources: golden file, Envoy's messages, and SNI routing simulated over
the generated listener (exact names, then ``*.`` suffixes, then the default chain)."""

from __future__ import annotations

import json
import subprocess
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest

from loom.dataplane.envoy import envoy_binary
from loom.xds.inputs import Endpoint, GatewayBind, GatewayInputs, GatewayRemote, GatewayService
from loom.xds.resources import Converter
from loom.xds.translate import InconsistentSnapshot, build_resources, check_consistency
from loom.xds.translate.gateway import UNKNOWN_SNI
from loom.xds.translate.names import TYPE_CLUSTER, TYPE_ENDPOINTS, TYPE_LISTENER, TYPE_SECRET

TD = "11111111-2222-3333-4444-555555555555.consul"
WEB = f"web.default.dc1.internal.{TD}"
API = f"api.prod.dc1.internal.{TD}"

GATEWAY = GatewayInputs(
    proxy_id="gateway-1", service="mesh-gateway", namespace="default", datacenter="dc1",
    trust_domain=TD,
    binds=(GatewayBind("default", "10.0.0.5", 8443), GatewayBind("wan", "198.51.100.5", 443)),
    services=(
        GatewayService(WEB, (Endpoint("10.0.0.7", 21000), Endpoint("10.0.0.8", 21000))),
        GatewayService(API, ()),
    ),
    remotes=(
        GatewayRemote("dc2", f"dc2.internal.{TD}", (Endpoint("203.0.113.9", 443),)),
        GatewayRemote("dc3", f"dc3.internal.{TD}", (Endpoint("gw.dc3.example.com", 443),)),
    ),
)  # fmt: skip


def route(res: dict[str, Any], listener: str, server_name: str | None) -> str:
    """The cluster a connection with this SNI reaches (Envoy's server-name matching: the
    exact name first, then the longest ``*.suffix``), or ``<closed>``."""
    lst = res[TYPE_LISTENER][listener]
    names = {
        n: chain for chain in lst["filter_chains"] for n in chain["filter_chain_match"]["server_names"]
    }
    chain = names.get(server_name or "")
    labels = (server_name or "").split(".")
    for i in range(1, len(labels)):
        if chain is None:
            chain = names.get("*." + ".".join(labels[i:]))
    chain = chain or lst["default_filter_chain"]
    last = chain["filters"][-1]
    if last["name"] == "envoy.filters.network.direct_response":
        return "<closed>"
    return str(last["typed_config"]["cluster"])


def test_the_gateway_resources_match_the_golden_file(golden) -> None:  # type: ignore[no-untyped-def]
    res = build_resources(GATEWAY)
    golden.check("xds/mesh_gateway.json", json.dumps(res, indent=1, sort_keys=True) + "\n")


def test_every_gateway_resource_parses_as_an_envoy_message() -> None:
    served = Converter().serve(build_resources(GATEWAY))
    assert all(s.message.ByteSize() > 0 for named in served.values() for s in named.values())
    assert set(served[TYPE_LISTENER]) == {"default:10.0.0.5:8443", "wan:198.51.100.5:443"}


@pytest.mark.parametrize("listener", ["default:10.0.0.5:8443", "wan:198.51.100.5:443"])
def test_a_local_sni_reaches_its_services_sidecars_and_another_dcs_reaches_its_gateways(
    listener: str,
) -> None:
    res = build_resources(GATEWAY)
    assert route(res, listener, WEB) == WEB
    assert route(res, listener, API) == API
    assert route(res, listener, f"db.default.dc2.internal.{TD}") == f"dc2.internal.{TD}"
    assert route(res, listener, f"db.other.dc3.internal.{TD}") == f"dc3.internal.{TD}"
    lbs = res[TYPE_ENDPOINTS][WEB]["endpoints"][0]["lb_endpoints"]
    assert [e["endpoint"]["address"]["socket_address"]["port_value"] for e in lbs] == [21000] * 2


@pytest.mark.parametrize(
    "name",
    [
        None,  # plain TCP, or TLS without SNI
        f"nope.default.dc1.internal.{TD}",  # no such service here
        f"web.default.dc9.internal.{TD}",  # no such datacenter
        "web.default.dc2.internal.other.consul",  # another trust domain
        "example.com",
    ],
)
def test_an_unknown_server_name_is_closed(name: str | None) -> None:
    res = build_resources(GATEWAY)
    assert route(res, "default:10.0.0.5:8443", name) == "<closed>"
    default = res[TYPE_LISTENER]["default:10.0.0.5:8443"]["default_filter_chain"]
    assert default["name"] == UNKNOWN_SNI


def test_the_gateway_terminates_no_tls_and_serves_no_secret() -> None:
    res = build_resources(GATEWAY)
    assert res[TYPE_SECRET] == {}
    text = json.dumps([res[TYPE_LISTENER], res[TYPE_CLUSTER]])
    assert "transport_socket" not in text and "sds" not in text
    assert "tls_inspector" in text


def test_a_gateway_known_by_host_name_gets_a_dns_cluster_and_the_others_eds() -> None:
    res = build_resources(GATEWAY)
    clusters = res[TYPE_CLUSTER]
    assert clusters[f"dc3.internal.{TD}"]["type"] == "STRICT_DNS"
    assert {n for n, c in clusters.items() if c["type"] == "EDS"} == set(res[TYPE_ENDPOINTS])
    assert set(res[TYPE_ENDPOINTS]) == {WEB, API, f"dc2.internal.{TD}"}


def test_a_gateway_with_nothing_to_route_still_listens_and_closes_everything() -> None:
    bare = replace(GATEWAY, services=(), remotes=(), binds=GATEWAY.binds[:1])
    res = build_resources(bare)
    (lst,) = res[TYPE_LISTENER].values()
    assert lst["filter_chains"] == []
    assert route(res, lst["name"], WEB) == "<closed>"
    Converter().serve(res)


def test_the_connect_timeout_comes_from_the_inputs() -> None:
    res = build_resources(replace(GATEWAY, connect_timeout_ms=1500))
    assert {c["connect_timeout"] for c in res[TYPE_CLUSTER].values()} == {"1.500s"}


def test_a_gateway_chain_without_its_cluster_is_refused() -> None:
    res = build_resources(GATEWAY)
    del res[TYPE_CLUSTER][f"dc2.internal.{TD}"]
    with pytest.raises(InconsistentSnapshot):
        check_consistency(res)


@pytest.mark.envoy
def test_envoy_itself_accepts_the_gateway_listeners_and_clusters(tmp_path: Path) -> None:
    """``envoy --mode validate`` on the generated resources, made static (EDS -> the same
    endpoints inline; listeners on port 0 so the check binds nothing it should not)."""
    res = build_resources(GATEWAY)
    clusters = []
    for c in res[TYPE_CLUSTER].values():
        if c["type"] == "EDS":
            c = {k: v for k, v in c.items() if k != "eds_cluster_config"}
            c |= {"type": "STATIC", "load_assignment": res[TYPE_ENDPOINTS][c["name"]]}
        clusters.append(c)
    any_port = {"socket_address": {"address": "127.0.0.1", "port_value": 0}}
    listeners = [lst | {"address": any_port} for lst in res[TYPE_LISTENER].values()]
    config = tmp_path / "gateway.json"
    config.write_text(json.dumps({
        "admin": {"address": any_port},
        "static_resources": {"listeners": listeners, "clusters": clusters},
    }))  # fmt: skip
    done = subprocess.run(
        [envoy_binary(), "--mode", "validate", "-c", str(config), "-l", "error"],
        capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 0, done.stdout + done.stderr
    assert "OK" in done.stdout
