"""The HTTP API against a real `loom server --dev` process (no mocks)."""

from __future__ import annotations

import threading
import time

from cryptography import x509

from loom.dns.table import NameTable

STATIC_SERVER = {"Name": "static-server", "Port": 8080, "Connect": {"SidecarService": {}}}
STATIC_CLIENT = {
    "Name": "static-client",
    "Port": 8081,
    "Connect": {"SidecarService": {"Proxy": {"Upstreams": [
        {"DestinationName": "static-server", "LocalBindPort": 1234}]}}},
}  # fmt: skip


def test_a_registered_service_and_its_sidecar_appear_in_the_agent_and_catalog(loom_server) -> None:
    loom_server.put("/v1/agent/service/register", STATIC_SERVER)
    services = loom_server.get("/v1/agent/services")
    assert set(services) == {"static-server", "static-server-sidecar-proxy"}
    sidecar = loom_server.get("/v1/agent/service/static-server-sidecar-proxy")
    assert sidecar["Kind"] == "connect-proxy"
    assert sidecar["Proxy"]["DestinationServiceName"] == "static-server"
    assert sidecar["Proxy"]["LocalServicePort"] == 8080
    catalog = loom_server.get("/v1/catalog/service/static-server-sidecar-proxy")
    assert catalog[0]["ServiceKind"] == "connect-proxy"
    assert catalog[0]["ServiceProxy"]["DestinationServiceID"] == "static-server"
    assert set(loom_server.get("/v1/catalog/services")) == {*services, "consul"}  # the server's
    assert [n["Node"] for n in loom_server.get("/v1/catalog/nodes")] == ["loom-server"]


def test_each_service_gets_a_stable_virtual_ip_reused_only_after_it_is_gone(loom_server) -> None:
    loom_server.put("/v1/agent/service/register", STATIC_SERVER)
    loom_server.put("/v1/agent/service/register", STATIC_CLIENT)

    def vip(name: str) -> str:
        return loom_server.get(f"/v1/catalog/service/{name}")[0]["ServiceTaggedAddresses"][
            "virtual"
        ]["Address"]

    server_vip, client_vip = vip("static-server"), vip("static-client")
    assert server_vip.startswith("240.") and client_vip.startswith("240.")
    assert server_vip != client_vip
    loom_server.put("/v1/agent/service/register", {**STATIC_SERVER, "Tags": ["v2"]})
    assert vip("static-server") == server_vip
    loom_server.put("/v1/agent/service/deregister/static-server")
    loom_server.put("/v1/agent/service/register", {"Name": "other", "Port": 1})
    assert vip("other") == server_vip  # freed, then reused
    assert vip("static-client") == client_vip


def test_ttl_checks_drive_health_and_passing_filters(loom_server) -> None:
    loom_server.put(
        "/v1/agent/service/register", {"Name": "web", "Port": 80, "Check": {"TTL": "30s"}}
    )
    assert loom_server.get("/v1/health/service/web?passing") == []
    entries = loom_server.get("/v1/health/service/web")
    assert entries[0]["Checks"][0]["Status"] == "critical"
    loom_server.put("/v1/agent/check/pass/service:web")
    entries = loom_server.get("/v1/health/service/web?passing")
    assert [e["Service"]["ID"] for e in entries] == ["web"]
    loom_server.put("/v1/agent/check/warn/service:web")
    assert loom_server.get("/v1/health/service/web?passing") == []


def test_a_ttl_check_that_is_not_refreshed_goes_critical(loom_server) -> None:
    loom_server.put(
        "/v1/agent/service/register", {"Name": "web", "Port": 80, "Check": {"TTL": "1s"}}
    )
    loom_server.put("/v1/agent/check/pass/service:web")
    deadline = time.monotonic() + 10
    status = "passing"
    while time.monotonic() < deadline and status != "critical":
        time.sleep(0.2)
        status = loom_server.get("/v1/health/service/web")[0]["Checks"][0]["Status"]
    assert status == "critical"


def test_health_connect_lists_the_sidecars_of_a_service(loom_server) -> None:
    loom_server.put("/v1/agent/service/register", STATIC_SERVER)
    entries = loom_server.get("/v1/health/connect/static-server")
    assert [e["Service"]["ID"] for e in entries] == ["static-server-sidecar-proxy"]


def test_a_blocking_query_returns_when_a_write_passes_its_index(loom_server) -> None:
    _, _, headers = loom_server.request("GET", "/v1/catalog/services")
    index = int(headers["X-Consul-Index"])
    result: dict[str, object] = {}

    def watch() -> None:
        start = time.monotonic()
        _, body, hdrs = loom_server.request("GET", f"/v1/catalog/services?index={index}&wait=20s")
        result.update(body=body, index=int(hdrs["X-Consul-Index"]), took=time.monotonic() - start)

    t = threading.Thread(target=watch)
    t.start()
    time.sleep(0.3)
    loom_server.put("/v1/agent/service/register", {"Name": "late", "Port": 1})
    t.join(15)
    assert "late" in result["body"]  # type: ignore[operator]
    assert result["index"] > index  # type: ignore[operator]
    assert result["took"] < 15  # type: ignore[operator]


def test_a_blocking_query_times_out_with_the_same_index(loom_server) -> None:
    _, _, headers = loom_server.request("GET", "/v1/catalog/services")
    index = headers["X-Consul-Index"]
    _, _, hdrs = loom_server.request("GET", f"/v1/catalog/services?index={index}&wait=300ms")
    assert hdrs["X-Consul-Index"] == index


def test_an_intention_write_does_not_wake_a_catalog_watch(loom_server) -> None:
    _, _, headers = loom_server.request("GET", "/v1/catalog/services")
    index = headers["X-Consul-Index"]
    loom_server.put("/v1/connect/intentions/exact?source=a&destination=b", {"Action": "deny"})
    _, _, hdrs = loom_server.request("GET", f"/v1/catalog/services?index={index}&wait=300ms")
    assert hdrs["X-Consul-Index"] == index


def test_intentions_exact_check_match_and_delete(loom_server) -> None:
    q = "source=static-client&destination=static-server"
    assert loom_server.get(f"/v1/connect/intentions/check?{q}")["Allowed"] is True
    assert loom_server.put(f"/v1/connect/intentions/exact?{q}", {"Action": "deny"}) is True
    assert loom_server.get(f"/v1/connect/intentions/check?{q}")["Allowed"] is False
    got = loom_server.get(f"/v1/connect/intentions/exact?{q}")
    assert (got["SourceName"], got["DestinationName"], got["Action"], got["Precedence"]) == (
        "static-client", "static-server", "deny", 9,
    )  # fmt: skip
    loom_server.put(
        "/v1/connect/intentions/exact?source=*&destination=static-server", {"Action": "allow"}
    )
    match = loom_server.get("/v1/connect/intentions/match?by=destination&name=static-server")
    assert [i["SourceName"] for i in match["static-server"]] == ["static-client", "*"]
    entry = loom_server.get("/v1/config/service-intentions/static-server")
    assert {s["Name"] for s in entry["Sources"]} == {"static-client", "*"}
    status, _, _ = loom_server.request("DELETE", f"/v1/connect/intentions/exact?{q}")
    assert status == 200
    assert loom_server.get(f"/v1/connect/intentions/check?{q}")["Allowed"] is True
    status, _, _ = loom_server.request("DELETE", f"/v1/connect/intentions/exact?{q}")
    assert status == 404


def test_config_entries_round_trip_and_list(loom_server) -> None:
    entry = {
        "Kind": "service-defaults",
        "Name": "web",
        "Protocol": "http",
        "MutualTLSMode": "permissive",
    }
    assert loom_server.put("/v1/config", entry) is True
    got = loom_server.get("/v1/config/service-defaults/web")
    assert got["Protocol"] == "http" and got["MutualTLSMode"] == "permissive"
    assert [e["Name"] for e in loom_server.get("/v1/config/service-defaults")] == ["web"]
    loom_server.put("/v1/config", {"Kind": "mesh", "Name": "mesh",
                                   "TransparentProxy": {"MeshDestinationsOnly": True}})  # fmt: skip
    assert loom_server.get("/v1/config/mesh/mesh")["TransparentProxy"]["MeshDestinationsOnly"]
    assert loom_server.request("DELETE", "/v1/config/service-defaults/web")[0] == 200
    assert loom_server.request("GET", "/v1/config/service-defaults/web")[0] == 404


def test_external_service_hosts_get_distinct_stable_vips(loom_server) -> None:
    for name, host in (
        ("db1", "mysql-instance1.example.com"),
        ("db2", "mysql-instance2.example.com"),
    ):
        loom_server.put("/v1/config", {"Kind": "external-service", "Name": name, "Hosts": [host],
                                       "Ports": [{"Number": 3306}]})  # fmt: skip

    def vips() -> dict[str, list[str]]:
        table = loom_server.get("/v1/loom/dns-table")
        return {e["Host"]: e["VirtualIPs"] for e in table["ExternalHosts"]}

    first = vips()
    v1, v2 = first["mysql-instance1.example.com"], first["mysql-instance2.example.com"]
    assert v1[0].startswith("240.240.") and v2[0].startswith("240.240.") and v1 != v2
    assert v1[1].startswith("fd00:f0f0::")
    loom_server.put("/v1/config", {"Kind": "external-service", "Name": "db1",
                                   "Hosts": ["mysql-instance1.example.com"], "Ports": [{"Number": 3307}]})  # fmt: skip
    assert vips() == first


def test_the_dns_table_lists_services_with_vips_and_healthy_instances(loom_server) -> None:
    loom_server.put("/v1/agent/service/register", {"Name": "web", "Port": 80, "Address": "10.244.0.5",
                                                   "Meta": {"pod-name": "web-abc"}})  # fmt: skip
    loom_server.put("/v1/agent/service/register", {"Name": "web", "ID": "web-2", "Port": 80,
                                                   "Address": "10.244.0.6", "Check": {"TTL": "60s"}})  # fmt: skip
    table = loom_server.get("/v1/loom/dns-table")
    (web,) = table["Services"]
    assert web["Name"] == "web" and web["VirtualIPs"][0].startswith("240.")
    assert web["Instances"] == [{"Address": "10.244.0.5", "Hostname": "web-abc"}]


def test_instance_ids_that_are_not_dns_labels_leave_the_dns_table_readable(loom_server) -> None:
    # Consul allows any service ID ("web.1", "redis:6379"); the table names an instance by its
    # ID only when the ID is a DNS label, or every DNS proxy would refuse the whole table.
    for sid, address in (("web.1", "10.244.0.7"), ("redis:6379", "10.244.0.8"), ("web-3", "10.244.0.9")):
        loom_server.put("/v1/agent/service/register",
                        {"Name": "web", "ID": sid, "Port": 80, "Address": address})  # fmt: skip
    raw = loom_server.get("/v1/loom/dns-table")
    table = NameTable.from_json(raw)  # raised TableError before
    (web,) = raw["Services"]
    assert sorted(web["Instances"], key=lambda i: i["Address"]) == [
        {"Address": "10.244.0.7"}, {"Address": "10.244.0.8"},
        {"Address": "10.244.0.9", "Hostname": "web-3"},
    ]  # fmt: skip
    assert table.lookup(table.consul_name("web", "service", "default", "dc1")) is not None


def test_the_ca_issues_leaves_with_spiffe_ids_signed_by_its_root(loom_server) -> None:
    roots = loom_server.get("/v1/connect/ca/roots")
    assert roots["TrustDomain"].endswith(".consul")
    root = x509.load_pem_x509_certificate(roots["Roots"][0]["RootCert"].encode())
    leaf_doc = loom_server.get("/v1/agent/connect/ca/leaf/web")
    leaf = x509.load_pem_x509_certificate(leaf_doc["CertPEM"].encode())
    leaf.verify_directly_issued_by(root)
    uris = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    expected = f"spiffe://{roots['TrustDomain']}/ns/default/dc/dc1/svc/web"
    assert uris.get_values_for_type(x509.UniformResourceIdentifier) == [expected]
    assert leaf_doc["ServiceURI"] == expected
    lifetime = leaf.not_valid_after_utc - leaf.not_valid_before_utc
    assert 71.9 * 3600 < lifetime.total_seconds() < 72.1 * 3600


def test_authorize_applies_intentions_to_a_client_certificate(loom_server) -> None:
    td = loom_server.get("/v1/connect/ca/roots")["TrustDomain"]
    uri = f"spiffe://{td}/ns/default/dc/dc1/svc/web"
    body = {"Target": "db", "ClientCertURI": uri}
    status, out, _ = loom_server.request("POST", "/v1/agent/connect/authorize", body)
    assert status == 200 and out["Authorized"] is True
    loom_server.put("/v1/connect/intentions/exact?source=web&destination=db", {"Action": "deny"})
    _, out, _ = loom_server.request("POST", "/v1/agent/connect/authorize", body)
    assert out["Authorized"] is False
    status, out, _ = loom_server.request(
        "POST", "/v1/agent/connect/authorize", {**body, "ClientCertURI": "spiffe://other/x"}
    )
    assert (status, out) == (400, "Invalid request: ClientCertURI not a valid Connect identifier\n")
    foreign = "spiffe://other.consul/ns/default/dc/dc1/svc/web"
    _, out, _ = loom_server.request(
        "POST", "/v1/agent/connect/authorize", {**body, "ClientCertURI": foreign}
    )
    assert out["Authorized"] is False


def test_bad_input_is_a_400_naming_the_field_and_writes_nothing(loom_server) -> None:
    cases = [
        ("PUT", "/v1/agent/service/register", b"{not json", "malformed JSON"),
        ("PUT", "/v1/agent/service/register", {"Name": "web", "Port": "80"}, "Port"),
        ("PUT", "/v1/agent/service/register", {"Name": "bad name!"}, "Name"),
        ("PUT", "/v1/agent/service/register",
         {"Name": "web", "Connect": {"SidecarService": {"Port": "x"}}}, "Connect.SidecarService.Port"),
        ("PUT", "/v1/connect/intentions/exact?source=a&destination=b", {"Action": "maybe"}, "Action"),
        ("PUT", "/v1/config", {"Kind": "service-defaults", "Name": "w", "Protocol": 7}, "Protocol"),
        ("GET", "/v1/catalog/services?index=abc", None, "index"),
    ]  # fmt: skip
    before = loom_server.request("GET", "/v1/catalog/services")[2]["X-Consul-Index"]
    for method, path, body, field in cases:
        status, text, _ = loom_server.request(method, path, body)
        assert status == 400, (path, body, status, text)
        assert field in text and "Traceback" not in text
        assert len(text.strip().splitlines()) == 1
    assert loom_server.get("/v1/agent/services") == {}
    assert loom_server.get("/v1/connect/intentions") == []
    assert loom_server.request("GET", "/v1/catalog/services")[2]["X-Consul-Index"] == before


def test_unknown_paths_and_objects_are_404(loom_server) -> None:
    assert loom_server.request("GET", "/v1/nope")[0] == 404
    assert loom_server.request("GET", "/v1/agent/service/missing")[0] == 404
    assert loom_server.request("PUT", "/v1/agent/service/deregister/missing")[0] == 404
    assert loom_server.request("PUT", "/v1/agent/check/pass/missing")[0] == 404
    assert loom_server.request("GET", "/v1/config/nope/x")[0] == 404


def test_status_endpoints_answer(loom_server) -> None:
    assert loom_server.get("/v1/status/leader").endswith(":8300")
    assert len(loom_server.get("/v1/status/peers")) == 1


def test_catalog_register_puts_services_on_their_own_nodes(loom_server) -> None:
    body = {"Node": "k8s-node-1", "Address": "10.0.0.7",
            "Service": {"Service": "api", "ID": "api-1", "Port": 9090, "Address": "10.244.0.9"}}  # fmt: skip
    assert loom_server.put("/v1/catalog/register", body) is True
    got = loom_server.get("/v1/catalog/service/api")
    assert (got[0]["Node"], got[0]["Address"], got[0]["ServiceAddress"]) == (
        "k8s-node-1", "10.0.0.7", "10.244.0.9",
    )  # fmt: skip
    assert loom_server.put("/v1/catalog/deregister", {"Node": "k8s-node-1"}) is True
    assert loom_server.get("/v1/catalog/service/api") == []
