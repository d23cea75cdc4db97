"""``?filter=`` on every list endpoint, through the real py-consul client against a real server.

py-consul passes ``filter_expr`` as Consul's ``filter`` query parameter; each endpoint filters
on the field names of what it answers (``Meta.env``, ``ServiceTags``, ``Checks.Status``...).
A bad expression is a 400 naming the problem before any blocking wait; a blocking query with a
filter still blocks and wakes; hostile expressions (deep, long, unicode, injection-shaped)
are a 200 or a 400, never a 500. Last, every field each endpoint answers is one its filter
can select, so the shapes in ``loom.server.filters`` cannot drift from ``views``.
"""

from __future__ import annotations

import threading
import time
import urllib.parse
from typing import Any

import consul
import pytest

from loom.bexpr import ListOf, MapOf, Scalar, Struct
from loom.server import filters


def _client(server) -> consul.Consul:  # type: ignore[no-untyped-def]
    host, port = server.http.rsplit(":", 1)
    return consul.Consul(host=host, port=int(port))


def _register_mesh(c: consul.Consul) -> None:
    check = consul.Check.ttl("60s")
    c.agent.service.register(
        "web", service_id="web-1", port=8080, tags=["v1", "prod"], meta={"env": "prod"},
        check=check,
    )  # fmt: skip
    c.agent.service.register(
        "web", service_id="web-2", port=8081, tags=["v2"], meta={"env": "qa"}, check=check
    )
    c.agent.service.register(
        "api", port=9090, tags=["v1"],
        connect={"SidecarService": {"Proxy": {"Upstreams": [
            {"DestinationName": "web", "LocalBindPort": 10000}]}}},
    )  # fmt: skip
    c.agent.check.ttl_pass("service:web-1")


def _get(server, path: str, expr: str) -> tuple[int, Any]:  # type: ignore[no-untyped-def]
    query = urllib.parse.urlencode({"filter": expr})
    status, body, _ = server.request("GET", f"{path}{'&' if '?' in path else '?'}{query}")
    return status, body


def test_agent_catalog_and_health_lists_filter_on_their_own_field_names(loom_server) -> None:
    c = _client(loom_server)
    _register_mesh(c)

    assert set(c.agent.services(filter_expr='Meta.env == "qa"')) == {"web-2"}
    assert set(c.agent.services(filter_expr='Service == web and "v1" in Tags')) == {"web-1"}
    assert set(c.agent.services(filter_expr="Proxy.Upstreams.DestinationName == web")) == {
        "api-sidecar-proxy"
    }
    assert set(c.agent.services(filter_expr='Kind == "connect-proxy"')) == {"api-sidecar-proxy"}
    assert set(c.agent.services(filter_expr="Port == 8081 or Port == 9090")) == {"web-2", "api"}
    checks = c.agent.checks(filter_expr="ServiceName == web and Status == critical")
    assert set(checks) == {"service:web-2"}

    _, nodes = c.catalog.service("web", filter_expr="ServiceMeta.env == prod")
    assert [n["ServiceID"] for n in nodes] == ["web-1"]
    _, nodes = c.catalog.service("web", filter_expr='ServiceTags is empty or "v2" in ServiceTags')
    assert [n["ServiceID"] for n in nodes] == ["web-2"]
    _, services = c.catalog.services(filter_expr='ServiceTags contains "v1"')
    # the services with a kept instance, with only the kept instances' tags (a sidecar
    # inherits its service's tags, as in Consul)
    assert services == {"api": ["v1"], "api-sidecar-proxy": ["v1"], "web": ["v1", "prod"]}
    _, services = c.catalog.services(filter_expr="ServiceKind == `connect-proxy`")
    assert list(services) == ["api-sidecar-proxy"]
    _, found = c.catalog.nodes(filter_expr='Node matches ".+"')
    assert len(found) == 1
    _, found = c.catalog.nodes(filter_expr='Meta.rack == "r9"')
    assert found == []

    _, entries = c.health.service("web", filter_expr="Checks.Status == passing")
    assert [e["Service"]["ID"] for e in entries] == ["web-1"]
    _, entries = c.health.service("web", filter_expr="not Checks.Status != passing")
    assert [e["Service"]["ID"] for e in entries] == ["web-1"]
    _, entries = c.health.service("web", filter_expr='Service.Meta.env != "prod"')
    assert [e["Service"]["ID"] for e in entries] == ["web-2"]
    _, entries = c.health.connect("api", filter_expr="Service.Proxy.Upstreams is not empty")
    assert [e["Service"]["ID"] for e in entries] == ["api-sidecar-proxy"]
    _, checks = c.health.checks("web", filter_expr='Status == "passing"')
    assert [ch["ServiceID"] for ch in checks] == ["web-1"]


def test_consuls_own_api_test_of_a_service_filter_passes(loom_server) -> None:
    # TestAPI_AgentServicesWithFilter in Consul's api/agent_test.go, through py-consul.
    c = _client(loom_server)
    c.agent.service.register("foo", service_id="foo", port=8000, tags=["bar", "baz"])
    c.agent.service.register("foo", service_id="foo2", port=8001, tags=["foo", "baz"])
    assert set(c.agent.services(filter_expr="foo in Tags")) == {"foo2"}
    assert set(c.agent.services(filter_expr="Service==foo and Port!=8000")) == {"foo2"}


def test_the_intention_list_filters_on_intention_fields(loom_server) -> None:
    c = _client(loom_server)
    c.connect.intentions.upsert("web", "db", action="allow")
    c.connect.intentions.upsert("api", "db", action="deny")
    c.connect.intentions.upsert("api", "web", action="allow")
    found = c.connect.intentions.list(filter_expr='DestinationName == db and Action == "deny"')
    assert [(i["SourceName"], i["DestinationName"]) for i in found] == [("api", "db")]
    found = c.connect.intentions.list(filter_expr="SourceName == api")
    assert sorted(i["DestinationName"] for i in found) == ["db", "web"]


@pytest.mark.parametrize(
    ("expr", "problem"),
    [
        ("Service ==", "column 11: expected a value, found end of expression"),
        ("Servce == web", 'Selector "Servce" is not valid'),
        ("Tags == v1", 'Invalid match operator "==" for selector "Tags"'),
        ("Port == web", 'Failed to coerce value "web" for selector "Port"'),
        ('Service matches "(x"', "Failed to compile regular expression"),
        ("Address == 10.0.0.1", "invalid number literal"),
        ("(" * 200 + "Port == 1" + ")" * 200, "nested deeper than 32 levels"),
        ("not " * 500 + "Port == 1", "nested deeper than 32 levels"),
        ('Service == "web"; DROP TABLE services; --', "unexpected ';'"),
        ("Meta[`${jndi:ldap://x}`] == 1 or 1 == 1", "expected"),
        ("Service == wéb", "unexpected 'é'"),
    ],
)
def test_a_bad_filter_is_a_400_naming_the_problem_in_consuls_words(
    loom_server, expr: str, problem: str
) -> None:
    status, body = _get(loom_server, "/v1/agent/services", expr)
    assert status == 400
    assert body.startswith("Failed to create boolean expression evaluator: ")
    assert problem in body


def test_py_consul_sees_a_bad_filter_as_a_bad_request(loom_server) -> None:
    with pytest.raises(consul.ConsulException, match="is not valid"):
        _client(loom_server).catalog.service("web", filter_expr="Nope == 1")


def test_hostile_but_valid_filters_answer_200_with_what_they_select(loom_server) -> None:
    c = _client(loom_server)
    c.agent.service.register("web", port=80, meta={"note": 'héllo "wörld" 🦄'})
    unicode_ok = 'Meta.note == "héllo \\"wörld\\" 🦄"'
    assert set(c.agent.services(filter_expr=unicode_ok)) == {"web"}
    wide = " or ".join(f"Service == s{i}" for i in range(400)) + " or Service == web"
    assert len(wide) > 6000
    status, body = _get(loom_server, "/v1/agent/services", wide)
    assert status == 200 and set(body) == {"web"}
    status, body = _get(loom_server, "/v1/agent/services", 'Service matches "(a+)+$"')
    assert status == 200 and body == {}
    status, body = _get(loom_server, "/v1/agent/services", 'Meta["\'; --"] != x')
    assert status == 200 and set(body) == {"web"}  # an absent key is != anything
    status, _ = _get(loom_server, "/v1/agent/services", "\x00")
    assert status == 400


def _blocking_watchers(server) -> int:  # type: ignore[no-untyped-def]
    _, _, headers = server.request("GET", "/v1/loom/dns-table")
    return int(headers["X-Loom-Blocking-Queries"])


def test_a_blocking_query_with_a_filter_blocks_and_wakes_with_the_filtered_answer(
    loom_server,
) -> None:
    loom_server.put("/v1/agent/service/register", {"Name": "web", "Port": 80})
    _, _, headers = loom_server.request("GET", "/v1/agent/services")
    index = int(headers["X-Consul-Index"])
    result: dict[str, Any] = {}

    def watch() -> None:
        query = urllib.parse.urlencode({"index": index, "wait": "20s", "filter": "Port == 81"})
        _, body, hdrs = loom_server.request("GET", f"/v1/agent/services?{query}")
        result.update(body=body, index=int(hdrs["X-Consul-Index"]))

    t = threading.Thread(target=watch)
    t.start()
    deadline = time.monotonic() + 10
    while _blocking_watchers(loom_server) < 1 and time.monotonic() < deadline:
        time.sleep(0.02)  # waiting for the watcher to be parked, not for a result
    assert _blocking_watchers(loom_server) == 1
    loom_server.put("/v1/agent/service/register", {"Name": "late", "Port": 81})
    t.join(15)
    assert set(result["body"]) == {"late"}
    assert result["index"] > index


def test_a_bad_filter_on_a_blocking_query_is_refused_at_once(loom_server) -> None:
    _, _, headers = loom_server.request("GET", "/v1/catalog/services")
    started = time.monotonic()
    query = urllib.parse.urlencode(
        {"index": headers["X-Consul-Index"], "wait": "30s", "filter": "Nope == 1"}
    )
    status, body, _ = loom_server.request("GET", f"/v1/catalog/services?{query}")
    assert status == 400 and 'Selector "Nope" is not valid' in body
    assert time.monotonic() - started < 10


def _unknown(doc: Any, shape: Any, path: str = "") -> list[str]:
    """The fields of ``doc`` that ``shape`` has no selector for."""
    if isinstance(shape, Struct):
        out = []
        for key, value in doc.items():
            if key in filters.UNFILTERED:
                continue
            if key not in shape.fields:
                out.append(f"{path}{key}")
            else:
                out += _unknown(value, shape.fields[key], f"{path}{key}.")
        return out
    if isinstance(shape, ListOf):
        return [f for item in doc for f in _unknown(item, shape.item, path)]
    if isinstance(shape, MapOf):
        return [f for v in doc.values() for f in _unknown(v, shape.value, path + "<any>.")]
    assert isinstance(shape, Scalar)
    return []


def test_every_field_an_endpoint_answers_is_one_its_filter_can_select(loom_server) -> None:
    c = _client(loom_server)
    _register_mesh(c)
    c.agent.service.register(
        "db", port=5432, tagged_addresses={"lan": {"address": "10.0.0.9", "port": 5432}},
        connect={"SidecarService": {"Proxy": {
            "Config": {"protocol": "tcp"},
            "Expose": {"Checks": True, "Paths": [{"Path": "/health", "LocalPathPort": 8080,
                                                    "ListenerPort": 21500}]},
            "Upstreams": [{"DestinationName": "web", "LocalBindPort": 10001,
                           "Config": {"connect_timeout_ms": 500}}]}}},
    )  # fmt: skip
    c.connect.intentions.upsert("web", "db", action="allow")
    loom_server.put(
        "/v1/config",
        {"Kind": "service-intentions", "Name": "api", "Sources": [
            {"Name": "web", "Permissions": [{"Action": "allow", "HTTP": {
                "PathPrefix": "/v1", "Methods": ["GET"],
                "Header": [{"Name": "x-env", "Exact": "prod"}]}}]}]},
    )  # fmt: skip
    answers: list[tuple[str, Any, Struct]] = [
        ("/v1/agent/services", None, filters.AGENT_SERVICE),
        ("/v1/agent/checks", None, filters.HEALTH_CHECK),
        ("/v1/catalog/service/db-sidecar-proxy", [], filters.CATALOG_SERVICE),
        ("/v1/catalog/service/web", [], filters.CATALOG_SERVICE),
        ("/v1/catalog/nodes", [], filters.NODE),
        ("/v1/health/service/web", [], filters.HEALTH_ENTRY),
        ("/v1/health/connect/db", [], filters.HEALTH_ENTRY),
        ("/v1/health/checks/web", [], filters.HEALTH_CHECK),
        ("/v1/connect/intentions", [], filters.INTENTION),
    ]
    for path, kind, shape in answers:
        body = loom_server.get(path)
        docs = list(body.values()) if kind is None else body
        assert docs, path
        assert [f for d in docs for f in _unknown(d, shape)] == [], path


def test_a_filter_sees_only_what_the_token_may_read_and_acl_marking_ignores_it() -> None:
    from tests.support.server import acl_server

    with acl_server() as server:
        mgmt = {"X-Consul-Token": server.put("/v1/acl/bootstrap")["SecretID"]}
        for name in ("web", "db"):
            body = {"Name": name, "Port": 80, "Meta": {"env": "prod"}}
            assert server.request("PUT", "/v1/agent/service/register", body, mgmt)[0] == 200
        rules = 'service "web" { policy = "read" }'
        policy = {"Name": "web-read", "Rules": rules}
        assert server.request("PUT", "/v1/acl/policy", policy, mgmt)[0] == 200
        _, token, _ = server.request(
            "PUT", "/v1/acl/token", {"Policies": [{"Name": "web-read"}]}, mgmt
        )
        reader = {"X-Consul-Token": token["SecretID"]}
        for expr, expected in [("Meta.env == prod", {"web"}), ("Service == db", set())]:
            query = urllib.parse.urlencode({"filter": expr})
            status, body, headers = server.request(
                "GET", f"/v1/agent/services?{query}", None, reader
            )
            assert status == 200 and set(body) == expected, expr
            assert headers["X-Consul-Results-Filtered-By-ACLs"] == "true", expr  # as unfiltered
        query = urllib.parse.urlencode({"filter": "Service == db"})
        _, body, _ = server.request("GET", f"/v1/agent/services?{query}", None, mgmt)
        assert set(body) == {"db"}
