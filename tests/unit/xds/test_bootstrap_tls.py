"""The bootstrap's xDS cluster over TLS: it verifies the server against the CA file and the
name it dials (SNI for a DNS name, an IP SAN for an address), presents a client certificate
only when given one, and a plaintext address gets no transport socket at all."""

from __future__ import annotations

import json

from loom.addrs import parse_address
from loom.dataplane.bootstrap import XdsTls, build_bootstrap, xds_cluster


def test_the_tls_bootstrap_matches_the_golden_file(golden) -> None:  # type: ignore[no-untyped-def]
    tls = XdsTls("/etc/loom/ca.pem", "server.dc1.consul", "/etc/loom/client.pem",
                 "/etc/loom/client-key.pem")  # fmt: skip
    boot = build_bootstrap("web-sidecar-proxy", "web", "default",
                           parse_address("https://loom.example:8503"), xds_tls=tls,
                           sds_socket="/run/loom/sds.sock")  # fmt: skip
    golden.check("xds/bootstrap_tls.json", json.dumps(boot, indent=1, sort_keys=True) + "\n")


def test_an_ip_address_is_matched_as_an_ip_san_without_sni() -> None:
    cluster = xds_cluster(parse_address("127.0.0.1:8503"), XdsTls("/ca.pem", "127.0.0.1"))
    context = cluster["transport_socket"]["typed_config"]
    assert "sni" not in context
    validation = context["common_tls_context"]["validation_context"]
    assert validation["match_typed_subject_alt_names"] == [
        {"san_type": "IP_ADDRESS", "matcher": {"exact": "127.0.0.1"}}
    ]
    assert "tls_certificates" not in context["common_tls_context"]


def test_a_plaintext_xds_address_has_no_transport_socket() -> None:
    assert "transport_socket" not in xds_cluster(parse_address("127.0.0.1:8502"))
