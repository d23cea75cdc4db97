"""The built-in server certificate (``loom.ca.servertls``, pure): the names clients dial, in
a fixed order without duplicates, as DNS or IP SANs; server auth only; signed by the root
and never outliving it; a SAN that is neither a name nor an address is refused by name."""

from __future__ import annotations

import datetime as dt
import ipaddress

import pytest
from cryptography import x509
from cryptography.x509.oid import ExtendedKeyUsageOID

from loom.ca.authority import new_root
from loom.ca.errors import CAError
from loom.ca.servertls import ServerTls, issue_server_cert, server_names

NOW = dt.datetime(2026, 12, 1, tzinfo=dt.UTC)


def test_the_names_are_loopback_the_node_the_server_name_and_the_extra_ones() -> None:
    names = server_names("node-1", "dc2", ServerTls(extra_sans=("10.0.0.5", "localhost", " ")))
    assert names == ("localhost", "127.0.0.1", "::1", "node-1", "server.dc2.consul", "10.0.0.5")


def test_the_certificate_carries_them_as_dns_and_ip_sans_signed_by_the_root() -> None:
    root = new_root("td.consul", NOW)
    names = server_names("node-1", "dc1", ServerTls())
    cert = x509.load_pem_x509_certificate(issue_server_cert(root, names, NOW).cert_pem.encode())
    san = cert.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert san.get_values_for_type(x509.DNSName) == ["localhost", "node-1", "server.dc1.consul"]
    assert san.get_values_for_type(x509.IPAddress) == [
        ipaddress.ip_address("127.0.0.1"), ipaddress.ip_address("::1"),
    ]  # fmt: skip
    usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert list(usage) == [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH]
    ca = x509.load_pem_x509_certificate(root.cert_pem.encode())
    cert.verify_directly_issued_by(ca)
    assert cert.not_valid_after_utc <= root.not_after


def test_a_san_that_is_neither_a_name_nor_an_address_is_refused() -> None:
    root = new_root("td.consul", NOW)
    with pytest.raises(CAError, match="--tls-san: 'a b' is neither a DNS name nor an IP"):
        issue_server_cert(root, ("localhost", "a b"), NOW)
