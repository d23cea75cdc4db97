"""Signing workers in a secondary datacenter: the same pool as the primary's, holding the
secondary's intermediate (not its own root, which signs only the server's TLS certificate).

A real primary ``State`` served over loopback HTTP signs the intermediate of a secondary
``State`` started with ``ca_sign_workers=2`` (real worker processes). Before that the
secondary answers ``CaNotInitialized`` and its workers hold no key; after it, a worker signs
CSRs whose leaves chain through the intermediate to the primary's root; after a rotation in
the primary, the workers sign with the new intermediate.
"""

from __future__ import annotations

import datetime as dt
import logging
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.x509.verification import PolicyBuilder, Store

from loom.ca.csr import build_csr, new_key, read_csr
from loom.ca.errors import CaNotInitialized
from loom.ca.spiffe import SpiffeId
from tests.support.federation import CaPair, federated_ca
from tests.support.pki import ScratchCA


@pytest.fixture
async def pair() -> AsyncIterator[CaPair]:
    async with federated_ca(ca_sign_workers=2) as found:
        assert await found.secondary.certs.workers_started() == 2
        yield found


def _chain(leaf_pem: str, *trusted_pem: str) -> list[x509.Certificate]:
    certs = x509.load_pem_x509_certificates(leaf_pem.encode())
    roots = [c for p in trusted_pem for c in x509.load_pem_x509_certificates(p.encode())]
    verifier = (
        PolicyBuilder().store(Store(roots)).time(dt.datetime.now(dt.UTC)).build_client_verifier()
    )
    return list(verifier.verify(certs[0], certs[1:]).chain)


async def _sign(pair: CaPair, service: str, caplog: pytest.LogCaptureFixture) -> str:
    certs = pair.secondary.certs
    identity = SpiffeId.of(certs.trust_domain, "default", "dc2", service)
    caplog.clear()
    with caplog.at_level(logging.DEBUG, logger="loom.ca"):
        leaf = await certs.sign_csr(read_csr(build_csr(identity, new_key()), verify=False))
    assert "a worker" in caplog.text and "in-process" not in caplog.text
    assert leaf.uri == identity.uri
    return leaf.cert_pem


async def test_a_secondary_s_workers_sign_nothing_until_it_has_an_intermediate(
    pair: CaPair,
) -> None:
    certs = pair.secondary.certs
    identity = SpiffeId.of(certs.local_roots()[0].trust_domain, "default", "dc2", "web")
    with pytest.raises(CaNotInitialized):
        await certs.sign_csr(build_csr(identity, new_key()))


async def test_a_secondary_s_worker_signs_with_its_intermediate_under_the_primary_s_root(
    pair: CaPair, caplog: pytest.LogCaptureFixture
) -> None:
    roots, _ = await pair.fed.roots()
    assert await pair.fed.sync(roots)
    pem = await _sign(pair, "web", caplog)
    chain = _chain(pem, pair.primary.certs.roots_pem)
    intermediate = pair.secondary.certs.intermediate
    assert intermediate is not None
    assert [c.subject for c in chain[1:]] == [
        x509.load_pem_x509_certificate(intermediate.cert_pem.encode()).subject,
        x509.load_pem_x509_certificate(pair.primary.certs.root.cert_pem.encode()).subject,
    ]
    local_root = x509.load_pem_x509_certificate(pair.secondary.certs.root.cert_pem.encode())
    assert chain[0].issuer != local_root.subject  # not the secondary's own root


async def test_after_a_rotation_in_the_primary_a_secondary_s_workers_use_the_new_intermediate(
    pair: CaPair, caplog: pytest.LogCaptureFixture, tmp_path: Path
) -> None:
    roots, _ = await pair.fed.roots()
    await pair.fed.sync(roots)
    first = pair.secondary.certs.intermediate
    new = ScratchCA(tmp_path, "Rotated Root")
    await pair.primary.ca_config.update(
        {"Provider": "consul", "Config": {"PrivateKey": new.key_pem, "RootCert": new.cert_pem}}
    )
    roots, _ = await pair.fed.roots()
    assert await pair.fed.sync(roots)
    second = pair.secondary.certs.intermediate
    assert first is not None and second is not None and second.cert_pem != first.cert_pem
    pem = await _sign(pair, "web", caplog)
    chain = _chain(pem, new.cert_pem)
    assert chain[1].public_bytes(serialization.Encoding.PEM).decode() == second.cert_pem
    assert chain[-1].subject == new.cert.subject
