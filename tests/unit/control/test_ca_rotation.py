"""Root rotation in the core: the mesh snapshot (what every proxy validates peers with)
carries the new root and the retired one, new leaves chain to the new root, and a second
rotation drops the first root (its leaves were re-issued since)."""

from __future__ import annotations

from pathlib import Path

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
