"""Two datacenters of real ``loom server`` processes that serve HTTPS alone (``--no-http``)
and federate over it: they join at ``https://`` addresses and advertise them, ``?dc=`` reads,
replication and the secondary's intermediate signing all cross the WAN over TLS, each server
verifying the other with the CA both certificates come from (``--tls-ca-file``). As an
attacker would try: a peer whose certificate comes from another CA is refused in the TLS
handshake and nothing is written on either side, plain HTTP to an HTTPS-only server gets no
answer (and a server told to join one that way says why), and the wrong token over HTTPS is
a 403 that writes nothing."""

from __future__ import annotations

import contextlib
import http.client
import json
import urllib.error
import urllib.request
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509

from tests.support.federation import Caller, federated, names_all, until_blocking, until_states
from tests.support.mesh import wait_for
from tests.support.pki import Issued, ScratchCA
from tests.support.server import ServerProcess, start_server

MANAGEMENT = str(uuid.uuid4())
M = {"X-Consul-Token": MANAGEMENT}
ADMIN = Caller(M)
ACL = ("--acl-default-policy", "deny", "--acl-initial-management-token", MANAGEMENT)


def _cert_flags(issued: Issued, ca: Path) -> list[str]:
    return ["--tls-cert-file", str(issued.cert), "--tls-key-file", str(issued.key),
            "--tls-ca-file", str(ca)]  # fmt: skip


class Wan:
    """The WAN CA, dc1 (primary) and dc2, both HTTPS only, each with its own certificate."""

    def __init__(self, tmp: Path, dc1: ServerProcess, dc2: ServerProcess, ca: ScratchCA) -> None:
        self.tmp, self.dc1, self.dc2, self.ca = tmp, dc1, dc2, ca


@pytest.fixture(scope="module")
def wan(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Wan]:
    tmp = tmp_path_factory.mktemp("wan-tls")
    ca = ScratchCA(tmp, "WAN CA")
    certs = {dc: ca.issue(f"server-{dc}", client_too=True) for dc in ("dc1", "dc2")}
    with federated(
        ("dc1", "dc2"), *ACL, replication_token=MANAGEMENT, headers=M, https_only=True,
        trust=str(ca.file), each=lambda dc: _cert_flags(certs[dc], ca.file),
    ) as (dc1, dc2):  # fmt: skip
        yield Wan(tmp, dc1, dc2, ca)


def test_https_only_datacenters_join_over_https_and_advertise_their_https_addresses(
    wan: Wan,
) -> None:
    for server in (wan.dc1, wan.dc2):
        assert server.http == "" and server.https
        assert "HTTP API on http://" not in "".join(server.ready_lines)
    state = ADMIN.get(wan.dc1, "/v1/internal/federation-state/dc2")["State"]
    assert state["Servers"] == [f"https://{wan.dc2.https}"]
    assert ADMIN.get(wan.dc1, "/v1/catalog/datacenters") == ["dc1", "dc2"]
    assert ADMIN.get(wan.dc2, "/v1/catalog/datacenters") == ["dc2", "dc1"]


def test_a_dc_catalog_read_crosses_the_wan_over_https(wan: Wan) -> None:
    ADMIN.put(wan.dc2, "/v1/agent/service/register", {"Name": "over-tls", "Port": 7443})
    assert ADMIN.get(wan.dc1, "/v1/catalog/service/over-tls") == []  # dc2's, not dc1's
    [inst] = ADMIN.get(wan.dc1, "/v1/catalog/service/over-tls?dc=dc2")
    assert inst["Datacenter"] == "dc2" and inst["ServicePort"] == 7443


def test_an_intention_written_in_the_primary_is_replicated_to_the_secondary(wan: Wan) -> None:
    ADMIN.put(wan.dc1, "/v1/connect/intentions/exact?source=web&destination=tls-repl",
              {"Action": "deny"})  # fmt: skip
    until_blocking(wan.dc2, "/v1/connect/intentions", lambda xs: any(
        x["DestinationName"] == "tls-repl" for x in xs), headers=M)  # fmt: skip
    checked = ADMIN.get(wan.dc2, "/v1/connect/intentions/check?source=web&destination=tls-repl")
    assert checked["Allowed"] is False


def test_a_leaf_of_the_secondary_is_signed_by_its_intermediate_under_the_primarys_root(
    wan: Wan,
) -> None:
    leaf = wait_for(lambda: _leaf_or_none(wan.dc2, "web"), what="dc2's intermediate")
    chain = x509.load_pem_x509_certificates(leaf["CertPEM"].encode())
    assert len(chain) == 2  # the leaf, then dc2's intermediate
    [root] = [r for r in ADMIN.get(wan.dc1, "/v1/connect/ca/roots")["Roots"] if r["Active"]]
    root_cert = x509.load_pem_x509_certificate(root["RootCert"].encode())
    chain[0].verify_directly_issued_by(chain[1])
    chain[1].verify_directly_issued_by(root_cert)
    assert leaf["ServiceURI"].endswith("/ns/default/dc/dc2/svc/web")


def _leaf_or_none(server: ServerProcess, service: str) -> Any:
    status, body, _ = server.request("GET", f"/v1/agent/connect/ca/leaf/{service}", headers=M)
    return body if status == 200 else None


@pytest.mark.parametrize("token", [None, "garbage", str(uuid.uuid4())])
def test_a_wrong_token_over_https_is_a_403_and_writes_nothing(
    wan: Wan, token: str | None
) -> None:
    headers = {} if token is None else {"X-Consul-Token": token}
    if token is not None:  # no token is the anonymous one: its reads are filtered instead
        status, _, _ = wan.dc1.request("GET", "/v1/catalog/services?dc=dc2", headers=headers)
        assert status == 403
    evil = {"Datacenter": "evil", "Servers": ["https://203.0.113.9:8501"], "MeshGateways": [],
            "Services": [], "UpdatedAt": "2099-01-01T00:00:00.000000Z"}  # fmt: skip
    status, _, _ = wan.dc1.request("PUT", "/v1/internal/federation-state", evil, headers=headers)
    assert status == 403
    assert ADMIN.known(wan.dc1) == {"dc1", "dc2"}


def test_a_server_joining_with_a_wrong_token_over_https_is_refused_with_403(wan: Wan) -> None:
    cert = wan.ca.issue("server-dc4", client_too=True)
    dc4 = start_server("--datacenter", "dc4", "--primary-datacenter", "dc1", *ACL,
                       "--join-wan", f"https://{wan.dc1.https}",
                       "--acl-replication-token", str(uuid.uuid4()),
                       *_cert_flags(cert, wan.ca.file), https_only=True,
                       trust=str(wan.ca.file))  # fmt: skip
    try:
        wait_for(lambda: "HTTP 403" in dc4.log_text() or None, what="dc4's refused join")
        assert ADMIN.known(wan.dc1) == {"dc1", "dc2"}
    finally:
        dc4.stop()


def test_a_peer_with_a_certificate_from_another_ca_is_refused_and_nothing_is_written(
    wan: Wan,
) -> None:
    other = ScratchCA(wan.tmp, "Other CA")
    stranger = other.issue("server-evil", client_too=True)
    # The stranger trusts the WAN CA, so only its own certificate is wrong.
    evil = start_server("--datacenter", "evil", *ACL, *_cert_flags(stranger, wan.ca.file),
                        https_only=True, trust=str(other.file))  # fmt: skip
    good = wan.ca.issue("server-dc3", client_too=True)
    dc3 = start_server("--datacenter", "dc3", "--primary-datacenter", "evil", *ACL,
                       "--join-wan", f"https://{evil.https}",
                       "--acl-replication-token", MANAGEMENT,
                       *_cert_flags(good, wan.ca.file), https_only=True,
                       trust=str(wan.ca.file))  # fmt: skip
    try:
        wait_for(lambda: "certificate verify failed" in dc3.log_text() or None,
                 what="dc3 refusing the stranger's certificate")  # fmt: skip
        assert ADMIN.known(dc3) == {"dc3"}
        assert ADMIN.known(evil) == {"evil"}  # nothing of dc3 reached it past the handshake
    finally:
        dc3.stop()
        evil.stop()


def test_plain_http_to_an_https_only_server_gets_no_answer_and_a_plain_join_says_why(
    wan: Wan,
) -> None:
    req = urllib.request.Request(f"http://{wan.dc1.https}/v1/status/leader", headers=M)
    with pytest.raises((urllib.error.URLError, http.client.HTTPException, ConnectionError)):
        urllib.request.urlopen(req, timeout=10)
    plain = start_server("--datacenter", "dc5", "--primary-datacenter", "dc1", *ACL,
                         "--join-wan", wan.dc1.https, "--acl-replication-token", MANAGEMENT)  # fmt: skip
    try:
        wait_for(lambda: f"give https://{wan.dc1.https}" in plain.log_text() or None,
                 what="the plain join's reason")  # fmt: skip
        assert ADMIN.known(wan.dc1) == {"dc1", "dc2"}
    finally:
        plain.stop()


def test_federation_states_carry_only_the_https_addresses(wan: Wan) -> None:
    states = ADMIN.get(wan.dc2, "/v1/internal/federation-states")
    servers = {s["Datacenter"]: s["Servers"] for s in states}
    assert servers == {"dc1": [f"https://{wan.dc1.https}"], "dc2": [f"https://{wan.dc2.https}"]}
    assert "http://" not in json.dumps(states)


def _strict(name: str, issued: Issued, ca: Path, *extra: str) -> ServerProcess:
    """An HTTPS-only server of datacenter ``name`` requiring client certificates of ``ca``."""
    return start_server("--datacenter", name, *ACL, *_cert_flags(issued, ca),
                        "--tls-verify-incoming", *extra, https_only=True, trust=str(ca),
                        identity=(str(issued.cert), str(issued.key)))  # fmt: skip


def test_servers_requiring_client_certificates_federate_and_refuse_a_strangers(
    tmp_path: Path,
) -> None:
    ca = ScratchCA(tmp_path, "WAN CA")
    stranger = ScratchCA(tmp_path, "Other CA").issue("server-evil", client_too=True)
    with contextlib.ExitStack() as stack:
        dc1 = _strict("dc1", ca.issue("server-s1", client_too=True), ca.file)
        stack.callback(dc1.stop)
        join = ("--primary-datacenter", "dc1", "--join-wan", dc1.wan,
                "--acl-replication-token", MANAGEMENT)  # fmt: skip
        dc2 = _strict("dc2", ca.issue("server-s2", client_too=True), ca.file, *join)
        stack.callback(dc2.stop)
        # dc2 presented its certificate to dc1, and dc1 its own to dc2 (following it).
        for server in (dc1, dc2):
            until_states(server, names_all("dc1", "dc2"), headers=M)
        # The stranger trusts dc1's CA, but its own certificate is of another one.
        evil = _strict("evil", stranger, ca.file, *join)
        stack.callback(evil.stop)
        refused = "it requires client certificates, it may have refused this server's"
        wait_for(lambda: refused in evil.log_text() or None,
                 what="dc1 refusing the stranger's client certificate")  # fmt: skip
        assert ADMIN.known(dc1) == {"dc1", "dc2"}


def test_built_in_certificates_federate_once_each_server_trusts_every_datacenters_ca(
    tmp_path: Path,
) -> None:
    # A first start makes each datacenter's CA root and writes its ca.pem.
    for dc, primary in (("dc1", "dc1"), ("dc2", "dc1")):
        start_server("--datacenter", dc, "--primary-datacenter", primary,
                     data_dir=tmp_path / dc, https_only=True).stop()  # fmt: skip
    own = {dc: tmp_path / dc / "tls" / "ca.pem" for dc in ("dc1", "dc2")}
    assert own["dc1"].read_text() != own["dc2"].read_text()  # a root per datacenter
    # Trusting its own CA alone (the default), dc2 refuses dc1's built-in certificate.
    dc1 = start_server("--datacenter", "dc1", data_dir=tmp_path / "dc1", https_only=True)
    try:
        dc2 = start_server("--datacenter", "dc2", "--primary-datacenter", "dc1", "--join-wan",
                           dc1.wan, data_dir=tmp_path / "dc2", https_only=True)  # fmt: skip
        try:
            wait_for(lambda: "certificate verify failed" in dc2.log_text() or None,
                     what="dc2 refusing a certificate of dc1's CA")  # fmt: skip
            assert {s["Datacenter"] for s in dc2.get("/v1/internal/federation-states")} == {
                "dc2"
            }
        finally:
            dc2.stop()
    finally:
        dc1.stop()
    # With a bundle of both, they federate (and the secondary's CA is signed over HTTPS).
    bundle = tmp_path / "wan-cas.pem"
    bundle.write_text(own["dc1"].read_text() + own["dc2"].read_text())
    with federated(("dc1", "dc2"), "--tls-ca-file", str(bundle), data_dir=tmp_path,
                   https_only=True, trust=str(bundle)) as (dc1, dc2):  # fmt: skip
        assert dc1.get("/v1/internal/federation-state/dc2")["State"]["Servers"] == [dc2.wan]
        leaf = wait_for(lambda: _leaf_or_none(dc2, "web"), what="dc2's intermediate")
        assert len(x509.load_pem_x509_certificates(leaf["CertPEM"].encode())) == 2
