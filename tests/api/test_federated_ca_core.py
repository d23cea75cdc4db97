"""The federated CA in-process: a primary ``State`` served over real HTTP (its aiohttp app on
loopback) and a secondary ``State`` whose ``FederatedCa`` asks it, as ``loom.server.wan.call``
would. The secondary answers 503 until it has an intermediate, then signs with it under the
primary's trust domain and roots; a rotation in the primary gives it a new intermediate under
the new root, stored with the new roots, and its leaves verify against the retired root alone
through the primary's cross-signed certificate."""

from __future__ import annotations

import datetime as dt
from collections.abc import AsyncIterator, Mapping
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.x509.verification import PolicyBuilder, Store, VerificationError

from loom.ca.errors import CaNotInitialized
from loom.control.fedca import FederatedCaError
from tests.support.federation import CaPair, federated_ca
from tests.support.pki import ScratchCA


@pytest.fixture
async def pair() -> AsyncIterator[CaPair]:
    async with federated_ca() as found:
        yield found


def _verify(chain_pem: str, *trusted_pem: str) -> list[x509.Certificate]:
    certs = x509.load_pem_x509_certificates(chain_pem.encode())
    roots = [c for p in trusted_pem for c in x509.load_pem_x509_certificates(p.encode())]
    verifier = (
        PolicyBuilder().store(Store(roots)).time(dt.datetime.now(dt.UTC)).build_client_verifier()
    )
    return list(verifier.verify(certs[0], certs[1:]).chain)


async def test_the_secondary_is_not_initialized_until_the_primary_signs_its_intermediate(
    pair: CaPair,
) -> None:
    certs = pair.secondary.certs
    with pytest.raises(CaNotInitialized, match="waiting for the primary datacenter dc1"):
        certs.leaf("web")
    with pytest.raises(CaNotInitialized):
        certs.roots()
    assert certs.roots_pem == certs.local_roots_pem  # the snapshot still has some roots
    roots, _ = await pair.fed.roots()
    assert await pair.fed.sync(roots)
    assert certs.trust_domain == pair.primary.certs.trust_domain
    assert [r.id for r in certs.roots()] == [r.id for r in pair.primary.certs.roots()]
    leaf = certs.leaf("web")
    chain = _verify(leaf.cert_pem, pair.primary.certs.roots_pem)
    assert len(chain) == 3  # leaf, dc2's intermediate, dc1's root
    assert leaf.uri == f"spiffe://{certs.trust_domain}/ns/default/dc/dc2/svc/web"
    assert not await pair.fed.sync(roots)  # nothing changed: nothing written


async def test_the_intermediate_key_stays_in_the_secondary_store(pair: CaPair) -> None:
    roots, _ = await pair.fed.roots()
    await pair.fed.sync(roots)
    intermediate = pair.secondary.certs.intermediate
    assert intermediate is not None and "PRIVATE KEY" in intermediate.key_pem
    primary_docs = [doc for _, doc in pair.primary.store.items("ca")]
    assert all(intermediate.key_pem != d.key_pem for d in primary_docs)


async def test_a_rotation_in_the_primary_moves_the_secondary_to_a_new_intermediate(
    pair: CaPair, tmp_path: Path
) -> None:
    roots, _ = await pair.fed.roots()
    await pair.fed.sync(roots)
    old_root = pair.primary.certs.root
    old_leaf = pair.secondary.certs.leaf("web")
    first = pair.secondary.certs.intermediate
    new = ScratchCA(tmp_path, "Rotated Root")
    await pair.primary.ca_config.update(
        {"Provider": "consul", "Config": {"PrivateKey": new.key_pem, "RootCert": new.cert_pem}}
    )
    roots, _ = await pair.fed.roots()
    assert await pair.fed.sync(roots)
    second = pair.secondary.certs.intermediate
    assert second is not None and first is not None and second.cert_pem != first.cert_pem
    issuer = x509.load_pem_x509_certificate(second.cert_pem.encode()).issuer
    assert issuer == new.cert.subject
    assert [r.id for r in pair.secondary.certs.roots()] == [
        r.id for r in pair.primary.certs.roots()
    ]
    leaf = pair.secondary.certs.leaf("web")
    assert leaf.serial != old_leaf.serial  # the leaf cache moved with the intermediate
    assert _verify(leaf.cert_pem, new.cert_pem)[-1].subject == new.cert.subject
    # A peer that still trusts only the retired root: through the primary's cross-signed cert.
    assert (
        _verify(leaf.cert_pem, old_root.cert_pem)[-1]
        .subject.rfc4514_string()
        .startswith("CN=Loom CA")
    )
    # Leaves signed before the rotation still verify against the roots the proxies now hold.
    _verify(old_leaf.cert_pem, pair.secondary.certs.roots_pem)
    with pytest.raises(VerificationError):
        _verify(leaf.cert_pem, ScratchCA(tmp_path, "Stranger").cert_pem)


async def test_the_secondary_refuses_to_rotate_and_the_primary_refuses_to_follow(
    pair: CaPair, tmp_path: Path
) -> None:
    from loom.domain.fields import ValidationError

    new = ScratchCA(tmp_path, "Rotated Root")
    body = {"Provider": "consul", "Config": {"PrivateKey": new.key_pem, "RootCert": new.cert_pem}}
    with pytest.raises(ValidationError, match="follows the primary"):
        await pair.secondary.ca_config.update(body)
    with pytest.raises(ValidationError, match="only the primary signs"):
        pair.secondary.certs.sign_intermediate("x")


async def test_an_answer_signed_for_another_key_is_refused_and_nothing_stored(
    pair: CaPair,
) -> None:
    honest = pair.fed.call

    async def swapped(
        method: str, path: str, query: dict[str, str] | None, body: bytes | None, timeout: float
    ) -> tuple[int, Mapping[str, str], bytes]:
        if method == "POST":  # a man in the middle signs his own request instead
            from loom.ca.csr import build_ca_csr, new_key

            body = build_ca_csr(pair.primary.certs.trust_domain, new_key()).encode()
        return await honest(method, path, query, body, timeout)

    pair.fed.call = swapped
    roots, _ = await pair.fed.roots()
    index = pair.secondary.store.index
    with pytest.raises(FederatedCaError, match="does not carry this datacenter's key"):
        await pair.fed.sync(roots)
    assert pair.secondary.store.index == index
    with pytest.raises(CaNotInitialized):
        pair.secondary.certs.leaf("web")
