"""Templated policies on a real `loom server --acl-default-policy deny`, through py-consul,
plain HTTP and `loom acl` with Consul's flags.

The user lists, reads and previews the built-in templates and makes a token with
``builtin/service`` for ``web``, which may register ``web`` and nothing else. The attacker
reads them without a token, asks for an unknown template, leaves the variable out, or slips
rules into the name: each gets Consul's 400 or 403 and no token is made.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from collections.abc import Iterator

import consul
import pytest

from tests.support.server import ServerProcess, acl_server

ROOT = str(uuid.uuid4())
MGMT = {"X-Consul-Token": ROOT}


@pytest.fixture(scope="module")
def server() -> Iterator[ServerProcess]:
    with acl_server(ROOT) as s:
        yield s


def _client(server: ServerProcess, token: str | None = None) -> consul.Consul:
    host, port = server.http.rsplit(":", 1)
    return consul.Consul(host=host, port=int(port), token=token)


def _token_count(server: ServerProcess) -> int:
    status, tokens, _ = server.request("GET", "/v1/acl/tokens", None, MGMT)
    assert status == 200
    return len(tokens)


def _register(server: ServerProcess, token: str, name: str) -> int:
    status, _, _ = server.request("PUT", "/v1/agent/service/register",
                                  {"Name": name, "Port": 8080}, {"X-Consul-Token": token})  # fmt: skip
    return status


def test_py_consul_lists_reads_and_previews_the_builtin_templates(server: ServerProcess) -> None:
    c = _client(server, ROOT)
    listed = c.acl.templated_policy.list()
    assert sorted(listed) == [
        "builtin/api-gateway",
        "builtin/dns",
        "builtin/node",
        "builtin/nomad-client",
        "builtin/nomad-server",
        "builtin/service",
    ]
    gateway = c.acl.templated_policy.read("builtin/api-gateway")
    assert gateway["Description"] == "Gives the token or role permissions for a Consul api gateway"
    preview = c.acl.templated_policy.preview("builtin/api-gateway", {"Name": "ingress"})
    assert 'service "ingress" {\n\tpolicy = "write"\n}' in preview["Rules"]
    client = c.acl.templated_policy.preview("builtin/nomad-client", {})
    assert client["Rules"].startswith('agent_prefix "" {')
    read = c.acl.templated_policy.read("builtin/service")
    assert read["TemplateName"] == "builtin/service" and '"required": ["name"]' in read["Schema"]
    assert 'service "{{.Name}}-sidecar-proxy"' in read["Template"]
    preview = c.acl.templated_policy.preview("builtin/service", {"Name": "web"})
    assert preview["Name"] == f"synthetic-policy-{preview['ID']}"
    assert 'service "web" {\n\tpolicy = "write"\n}' in preview["Rules"]


def test_a_token_made_with_builtin_service_may_register_its_service_only(
    server: ServerProcess,
) -> None:
    made = _client(server, ROOT).acl.token.create(
        templated_policies=[{"builtin/service": {"Name": "web"}}]
    )
    assert made["TemplatedPolicies"] == [
        {"TemplateName": "builtin/service", "TemplateVariables": {"Name": "web"}}
    ]
    secret = made["SecretID"]
    assert _register(server, secret, "web") == 200
    assert _register(server, secret, "db") == 403
    status, text, _ = server.request("GET", "/v1/acl/tokens", None, {"X-Consul-Token": secret})
    assert status == 403 and "acl:read" in text
    read = _client(server, ROOT).acl.token.read(made["AccessorID"])
    assert read["TemplatedPolicies"] == made["TemplatedPolicies"]


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"TemplatedPolicies": [{"TemplateName": "builtin/admin"}]},
         "templated policy with an invalid templated name: builtin/admin for this token"),
        ({"TemplatedPolicies": [{"TemplateName": "builtin/service"}]},
         "validation error for builtin/service: Invalid type. Expected: object, given: null"),
        ({"TemplatedPolicies": [{"TemplateName": "builtin/service",
                                 "TemplateVariables": {"Name": 'x" {}\nacl = "write'}}]},
         "has an invalid name"),
    ],
)  # fmt: skip
def test_a_bad_templated_policy_is_a_400_in_consul_s_words_and_no_token_is_made(
    server: ServerProcess, body: dict[str, object], message: str
) -> None:
    before = _token_count(server)
    status, text, _ = server.request("PUT", "/v1/acl/token", body, MGMT)
    assert status == 400 and message in text, text
    status, text, _ = server.request("PUT", "/v1/acl/role", {"Name": "r", **body}, MGMT)
    assert status == 400 and message.replace("this token", "this role") in text, text
    assert _token_count(server) == before


def test_the_template_endpoints_refuse_no_token_and_a_token_without_acl_read(
    server: ServerProcess,
) -> None:
    made = _client(server, ROOT).acl.token.create(service_identities=[{"ServiceName": "web"}])
    for headers in ({}, {"X-Consul-Token": str(uuid.uuid4())},
                    {"X-Consul-Token": made["SecretID"]}):  # fmt: skip
        for method, path in (("GET", "/v1/acl/templated-policies"),
                             ("GET", "/v1/acl/templated-policy/name/builtin/dns"),
                             ("POST", "/v1/acl/templated-policy/preview/builtin/dns")):  # fmt: skip
            status, _, _ = server.request(method, path, None, headers)
            assert status == 403, (method, path, headers)


def test_unknown_templates_and_missing_names_are_consul_s_400s(server: ServerProcess) -> None:
    status, text, _ = server.request("GET", "/v1/acl/templated-policy/name/builtin/x", None, MGMT)
    assert status == 400 and text.strip().endswith("Invalid templated policy Name: builtin/x")
    status, text, _ = server.request(
        "POST", "/v1/acl/templated-policy/preview/builtin/node", {}, MGMT
    )
    assert (
        status == 400
        and (
            'validation error for templated policy: builtin/node: node identity ""  has an invalid'
        )
        in text
    ), text


def _loom(*args: str) -> subprocess.CompletedProcess[str]:
    clean = {k: v for k, v in os.environ.items() if "HTTP_TOKEN" not in k}
    return subprocess.run([sys.executable, "-m", "loom", *args], capture_output=True, text=True,
                          timeout=30, env=clean)  # fmt: skip


def test_loom_acl_token_create_takes_consul_s_templated_policy_flags(
    server: ServerProcess,
) -> None:
    addr = ["-http-addr", server.http, "-token", ROOT]
    out = _loom("acl", "token", "create", "-templated-policy", "builtin/service",
                "-var", "name:api", *addr, "-format", "json")  # fmt: skip
    assert out.returncode == 0, out.stderr
    made = json.loads(out.stdout)
    assert made["TemplatedPolicies"][0]["TemplateVariables"] == {"Name": "api"}
    assert _register(server, made["SecretID"], "api") == 200
    pretty = _loom("acl", "token", "create", "-templated-policy", "builtin/dns", *addr)
    assert pretty.returncode == 0 and "Templated Policies:\n   builtin/dns\n" in pretty.stdout
    bad = _loom("acl", "token", "create", "-templated-policy", "builtin/nope", *addr)
    assert bad.returncode != 0 and "invalid templated name: builtin/nope" in bad.stderr
    anonymous = _loom("acl", "templated-policy", "list", "-http-addr", server.http)
    assert anonymous.returncode != 0 and "Permission denied" in anonymous.stderr
    preview = _loom("acl", "templated-policy", "preview", "-name", "builtin/service",
                    "-var", "name:web", *addr)  # fmt: skip
    assert preview.returncode == 0 and 'service "web-sidecar-proxy"' in preview.stdout
