"""Root rotation in the core: the mesh snapshot (what every proxy validates peers with)
carries the new root and the retired one, new leaves chain to the new root, and a second
rotation drops the first root (its leaves were re-issued since)."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest
from cryptography import x509

from loom.control.state import ServerSettings, State
from tests.support.pki import ScratchCA


def _rotate_body(ca: ScratchCA) -> dict[str, object]:
    return {"Provider": "consul", "Config": {"PrivateKey": ca.key_pem, "RootCert": ca.cert_pem}}


async def test_a_rotation_puts_both_roots_in_the_snapshot_and_signs_with_the_new(
    tmp_path: Path,
) -> None:
    state = State(ServerSettings(http_addrs=(), grpc_addrs=()))
    await state.start()
    try:
        first = state.certs.root.cert_pem
        before = state.snapshot()
        assert before.roots_pem == first
        second = ScratchCA(tmp_path, "Second Root")
        await state.ca_config.update(_rotate_body(second))
        after = state.snapshot()
        assert after.index > before.index
        assert after.roots_pem == second.cert_pem + first
        leaf = x509.load_pem_x509_certificate(state.certs.leaf("web").cert_pem.encode())
        assert leaf.issuer == second.cert.subject
        third = ScratchCA(tmp_path, "Third Root")
        await state.ca_config.update(_rotate_body(third))
        assert state.snapshot().roots_pem == third.cert_pem + second.cert_pem
    finally:
        await state.close()


async def test_rotating_to_the_active_root_again_changes_no_root(tmp_path: Path) -> None:
    state = State(ServerSettings(http_addrs=(), grpc_addrs=()))
    await state.start()
    try:
        ca = ScratchCA(tmp_path)
        await state.ca_config.update(_rotate_body(ca))
        roots = [r.id for r in state.certs.roots()]
        await state.ca_config.update(_rotate_body(ca))
        assert [r.id for r in state.certs.roots()] == roots
    finally:
        await state.close()


def _verify(tmp_path: Path, chain_pem: str, trusted_pem: str) -> subprocess.CompletedProcess[str]:
    """``openssl verify`` of a leaf (first certificate of ``chain_pem``) against
    ``trusted_pem`` only, the rest of the chain offered as untrusted intermediates."""
    certs = [
        c + "-----END CERTIFICATE-----\n"
        for c in chain_pem.split("-----END CERTIFICATE-----\n")
        if c.strip()
    ]
    (tmp_path / "leaf.pem").write_text(certs[0])
    (tmp_path / "chain.pem").write_text("".join(certs[1:]) or certs[0])
    (tmp_path / "trusted.pem").write_text(trusted_pem)
    return subprocess.run(
        [
            "openssl",
            "verify",
            "-CAfile",
            str(tmp_path / "trusted.pem"),
            "-untrusted",
            str(tmp_path / "chain.pem"),
            str(tmp_path / "leaf.pem"),
        ],
        capture_output=True,
        text=True,
        check=False,
    )


@pytest.mark.skipif(shutil.which("openssl") is None, reason="needs the openssl command")
async def test_leaves_of_a_new_root_verify_against_the_old_root_alone_through_the_cross_signed_root(
    tmp_path: Path,
) -> None:
    state = State(ServerSettings(http_addrs=(), grpc_addrs=()))
    await state.start()
    try:
        first = state.certs.root.cert_pem
        assert state.certs.intermediates == []
        second = ScratchCA(tmp_path, "Second Root")
        await state.ca_config.update(_rotate_body(second))
        chain = state.certs.leaf("web").cert_pem
        assert chain.count("BEGIN CERTIFICATE") == 2
        assert state.certs.intermediates == [chain[chain.index("-----BEGIN", 1) :]]
        cross = x509.load_pem_x509_certificate(state.certs.intermediates[0].encode())
        assert (
            cross.subject == second.cert.subject and cross.public_key() == second.cert.public_key()
        )
        # A peer that only has the old root, and one that only has the new, both accept it.
        old_only = _verify(tmp_path, chain, first)
        assert old_only.returncode == 0, old_only.stdout + old_only.stderr
        new_only = _verify(tmp_path, chain, second.cert_pem)
        assert new_only.returncode == 0, new_only.stdout + new_only.stderr
        stranger = _verify(tmp_path, chain, ScratchCA(tmp_path, "Stranger").cert_pem)
        assert stranger.returncode != 0
        # A CSR's leaf carries the chain too, and so does the next rotation's.
        third = ScratchCA(tmp_path, "Third Root")
        await state.ca_config.update(_rotate_body(third))
        chain3 = state.certs.leaf("web").cert_pem
        assert _verify(tmp_path, chain3, second.cert_pem).returncode == 0
        assert _verify(tmp_path, chain3, first).returncode != 0
    finally:
        await state.close()


async def test_force_without_cross_signing_issues_bare_leaves(tmp_path: Path) -> None:
    state = State(ServerSettings(http_addrs=(), grpc_addrs=()))
    await state.start()
    try:
        second = ScratchCA(tmp_path, "Second Root")
        await state.ca_config.update({**_rotate_body(second), "ForceWithoutCrossSigning": True})
        assert state.certs.leaf("web").cert_pem.count("BEGIN CERTIFICATE") == 1
        assert state.certs.intermediates == []
        assert state.ca_config.read()["ForceWithoutCrossSigning"] is True
    finally:
        await state.close()
