"""Two real `loom server` processes sharing one etcd: a root rotation and a new leaf
lifetime written through one are followed by the other (its roots answer a blocking query
when the CA table moves, its new leaves chain to the new root and have the new life)."""

from __future__ import annotations

import datetime as dt
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest
from cryptography import x509

from tests.support.etcd import EtcdProcess, etcd_missing_reason
from tests.support.pki import ScratchCA
from tests.support.server import ServerProcess

pytestmark = pytest.mark.skipif(
    etcd_missing_reason() is not None, reason=str(etcd_missing_reason())
)


@pytest.fixture
def pair(tmp_path: Path) -> Iterator[tuple[ServerProcess, ServerProcess]]:
    etcd = EtcdProcess(tmp_path / "etcd").start()
    prefix = f"/loom-ca-{uuid.uuid4().hex[:8]}/"
    servers: list[ServerProcess] = []
    try:
        for _ in range(2):  # one after the other: the first makes the CA root
            servers.append(ServerProcess(["--etcd-endpoints", etcd.endpoint, "--etcd-prefix",
                                          prefix, "--http-addr", "127.0.0.1:0", "--grpc-addr",
                                          "127.0.0.1:0"]).start())  # fmt: skip
        yield servers[0], servers[1]
    finally:
        for server in servers:
            server.stop()
        etcd.stop()


def test_a_rotation_through_one_server_is_followed_by_the_other(
    pair: tuple[ServerProcess, ServerProcess], tmp_path: Path
) -> None:
    a, b = pair
    status, before, headers = b.request("GET", "/v1/connect/ca/roots")
    assert status == 200 and before == a.get("/v1/connect/ca/roots")
    new = ScratchCA(tmp_path, "Shared Root")
    config = {"PrivateKey": new.key_pem, "RootCert": new.cert_pem, "LeafCertTTL": "36h"}
    a.put("/v1/connect/ca/configuration", {"Provider": "consul", "Config": config})
    index = headers["X-Consul-Index"]
    roots = b.get(f"/v1/connect/ca/roots?index={index}&wait=10s")  # wakes on the CA write
    assert roots["Roots"][0]["RootCert"] == new.cert_pem
    assert [r["Active"] for r in roots["Roots"]] == [True, False]
    leaf = b.get("/v1/agent/connect/ca/leaf/web")
    assert x509.load_pem_x509_certificate(leaf["CertPEM"].encode()).issuer == new.cert.subject
    life = dt.datetime.fromisoformat(leaf["ValidBefore"]) - dt.datetime.fromisoformat(
        leaf["ValidAfter"]
    )
    assert abs(life - dt.timedelta(hours=36)) < dt.timedelta(minutes=2)
    assert b.get("/v1/connect/ca/configuration")["Config"]["LeafCertTTL"] == "36h"
