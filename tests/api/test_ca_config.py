"""``GET/PUT /v1/connect/ca/configuration`` on a real `loom server`, through py-consul and raw
HTTP: the read, the leaf lifetime update (kept across a restart), root rotation (new root
active, old one still trusted), refusals of bad bodies with nothing changed, and with ACLs
the operator permissions (an attacker without operator:write changes nothing)."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import consul
import pytest
from cryptography import x509

from tests.support.pki import ScratchCA
from tests.support.server import ServerProcess, start_server
from tests.support.server import acl_server as running_acl_server

PATH = "/v1/connect/ca/configuration"
ROOT = str(uuid.uuid4())


def _py_consul(server: ServerProcess, token: str | None = None) -> consul.Consul:
    host, port = server.http.rsplit(":", 1)
    return consul.Consul(host=host, port=int(port), token=token)


def _leaf_life(server: ServerProcess, service: str) -> dt.timedelta:
    leaf = server.get(f"/v1/agent/connect/ca/leaf/{service}")
    return dt.datetime.fromisoformat(leaf["ValidBefore"]) - dt.datetime.fromisoformat(
        leaf["ValidAfter"]
    )


def _issuer(server: ServerProcess, service: str) -> x509.Name:
    pem = server.get(f"/v1/agent/connect/ca/leaf/{service}")["CertPEM"]
    return x509.load_pem_x509_certificate(pem.encode()).issuer


def test_py_consul_reads_the_default_configuration(loom_server) -> None:
    config = _py_consul(loom_server).connect.ca.configuration()
    assert config["Provider"] == "consul"
    assert config["Config"] == {
        "LeafCertTTL": "72h", "RotationPeriod": "2160h", "IntermediateCertTTL": "8760h",
    }  # fmt: skip
    assert config["ModifyIndex"] >= 1


def test_a_new_leaf_cert_ttl_applies_to_new_leaves_and_survives_a_restart(tmp_path: Path) -> None:
    server = start_server(data_dir=tmp_path)
    try:
        assert abs(_leaf_life(server, "before") - dt.timedelta(hours=72)) < dt.timedelta(minutes=2)
        c = _py_consul(server)
        assert c.connect.ca.update_configuration("consul", {"LeafCertTTL": "24h"}) is True
        assert c.connect.ca.configuration()["Config"]["LeafCertTTL"] == "24h"
        assert abs(_leaf_life(server, "after") - dt.timedelta(hours=24)) < dt.timedelta(minutes=2)
    finally:
        server.stop()
    again = start_server(data_dir=tmp_path)
    try:
        assert again.get(PATH)["Config"]["LeafCertTTL"] == "24h"
        assert abs(_leaf_life(again, "later") - dt.timedelta(hours=24)) < dt.timedelta(minutes=2)
    finally:
        again.stop()


@pytest.mark.parametrize(
    ("body", "message"),
    [
        ({"Provider": "vault", "Config": {}}, "'vault' is not supported"),
        ({"Config": {"LeafCertTTL": "24h"}}, "Provider: is required"),
        ({"Provider": "consul", "Config": {"LeafCertTTL": "30m"}}, "out of range"),
        ({"Provider": "consul", "Config": {"LeafCertTTL": "soon"}}, "not a duration"),
        ({"Provider": "consul", "Config": {"Address": "https://vault"}}, "unknown field"),
        ({"Provider": "consul", "Config": {"PrivateKey": "x"}}, "given together"),
    ],
)
def test_a_bad_body_is_a_400_and_changes_nothing(loom_server, body: Any, message: str) -> None:
    before = loom_server.get(PATH)
    status, text, _ = loom_server.request("PUT", PATH, body)
    assert status == 400 and message in text, text
    assert loom_server.get(PATH) == before


def test_a_root_that_is_not_a_matching_ca_is_refused(loom_server, tmp_path: Path) -> None:
    ca, other = ScratchCA(tmp_path), ScratchCA(tmp_path, "Other CA")
    leaf = ca.issue("not-a-ca")
    roots = loom_server.get("/v1/connect/ca/roots")
    for cert, key, message in (
        (ca.cert_pem, other.key_pem, "does not match"),
        (leaf.cert.read_text(), leaf.key.read_text(), "not a CA certificate"),
        ("garbage", ca.key_pem, "not a PEM certificate"),
    ):
        config = {"PrivateKey": key, "RootCert": cert}
        status, text, _ = loom_server.request("PUT", PATH, {"Provider": "consul", "Config": config})
        assert status == 400 and message in text, text
    assert loom_server.get("/v1/connect/ca/roots") == roots


def test_rotating_the_root_makes_it_active_and_keeps_the_old_one_trusted(
    loom_server, tmp_path: Path
) -> None:
    old = loom_server.get("/v1/connect/ca/roots")
    old_issuer = _issuer(loom_server, "web")
    new = ScratchCA(tmp_path, "Operator Root")
    config = {"PrivateKey": new.key_pem, "RootCert": new.cert_pem, "LeafCertTTL": "48h"}
    loom_server.put(PATH, {"Provider": "consul", "Config": config})
    roots = loom_server.get("/v1/connect/ca/roots")
    assert roots["ActiveRootID"] != old["ActiveRootID"]
    assert roots["TrustDomain"] == old["TrustDomain"]  # the identities stay the same
    assert [(r["ID"], r["Active"]) for r in roots["Roots"]] == [
        (roots["ActiveRootID"], True), (old["ActiveRootID"], False),
    ]  # fmt: skip
    assert roots["Roots"][0]["RootCert"] == new.cert_pem
    assert "PrivateKey" not in loom_server.get(PATH)["Config"]  # the key is never read back
    # Leaves are re-issued by the new root (the same service's cached one included).
    assert _issuer(loom_server, "web") == new.cert.subject != old_issuer
    assert abs(_leaf_life(loom_server, "db") - dt.timedelta(hours=48)) < dt.timedelta(minutes=2)


@pytest.fixture
def acl_server() -> Any:
    with running_acl_server(ROOT) as server:
        yield server


def test_without_operator_permissions_the_configuration_is_neither_read_nor_changed(
    acl_server,
) -> None:
    mgmt = {"X-Consul-Token": ROOT}
    policy = {"Name": "ops-read", "Rules": 'operator = "read"'}
    status, _, _ = acl_server.request("PUT", "/v1/acl/policy", policy, mgmt)
    assert status == 200
    status, token, _ = acl_server.request("PUT", "/v1/acl/token",
                                          {"Policies": [{"Name": "ops-read"}]}, mgmt)  # fmt: skip
    assert status == 200
    before = acl_server.request("GET", PATH, None, mgmt)[1]
    body = {"Provider": "consul", "Config": {"LeafCertTTL": "1h"}}
    status, text, _ = acl_server.request("GET", PATH)
    assert status == 403 and "operator:read" in text
    for headers in ({}, {"X-Consul-Token": str(uuid.uuid4())}, {"X-Consul-Token": token["SecretID"]}):
        status, text, _ = acl_server.request("PUT", PATH, body, headers)
        assert status == 403, (headers, text)
    assert "operator:write" in text
    status, seen, _ = acl_server.request("GET", PATH, None, {"X-Consul-Token": token["SecretID"]})
    assert status == 200 and seen == before  # read allowed, nothing changed
    c = _py_consul(acl_server, token=ROOT)
    assert c.connect.ca.update_configuration("consul", {"LeafCertTTL": "1h"}) is True
    assert c.connect.ca.configuration()["Config"]["LeafCertTTL"] == "1h"
