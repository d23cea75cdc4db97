"""CSR signing in worker processes (``--ca-sign-workers``), on a real ``State`` with real
worker processes: what they sign chains to the root and carries the CSR's key; a CSR with a
forged signature, or a proof whose signature covers other bytes than its own, is refused
by the worker; a rotation reaches the workers; a worker that dies leaves signing in-process;
and the root key is on no worker's command line or environment (it went over the pipe).
"""

from __future__ import annotations

import logging
import os
import signal
from collections.abc import AsyncIterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from loom.ca.csr import CsrError, build_csr, new_key, read_csr
from loom.ca.spiffe import SpiffeId
from loom.control.state import ServerSettings, State
from tests.support.pki import ScratchCA


@pytest.fixture
async def state() -> AsyncIterator[State]:
    s = State(ServerSettings(http_addrs=(), grpc_addrs=(), ca_sign_workers=2))
    await s.start()
    try:
        assert await s.certs.workers_started() == 2
        yield s
    finally:
        await s.close()


def _identity(state: State, service: str) -> SpiffeId:
    return SpiffeId.of(state.certs.trust_domain, "default", "dc1", service)


def _chains_to(leaf_pem: str, root_pem: str) -> bool:
    leaf = x509.load_pem_x509_certificate(leaf_pem.encode())
    root = x509.load_pem_x509_certificate(root_pem.encode())
    public = root.public_key()
    assert isinstance(public, ec.EllipticCurvePublicKey)
    assert leaf.signature_hash_algorithm is not None
    try:
        public.verify(leaf.signature, leaf.tbs_certificate_bytes,
                      ec.ECDSA(leaf.signature_hash_algorithm))  # fmt: skip
    except Exception:
        return False
    return leaf.issuer == root.subject


def _forged(pem: str) -> str:
    """The same CSR with one bit of its signature flipped (its last byte)."""
    der = bytearray(x509.load_pem_x509_csr(pem.encode()).public_bytes(serialization.Encoding.DER))
    der[-1] ^= 0x01
    csr = x509.load_der_x509_csr(bytes(der))
    return csr.public_bytes(serialization.Encoding.PEM).decode()


async def test_a_worker_signs_a_csr_with_the_root_and_the_csr_s_own_key(
    state: State, caplog: pytest.LogCaptureFixture
) -> None:
    key = new_key()
    with caplog.at_level(logging.DEBUG, logger="loom.ca"):
        leaf = await state.certs.sign_csr(read_csr(build_csr(_identity(state, "web"), key),
                                                   verify=False))  # fmt: skip
    assert "a worker" in caplog.text and "in-process" not in caplog.text
    assert leaf.key_pem == "" and leaf.uri == _identity(state, "web").uri
    assert _chains_to(leaf.cert_pem, state.certs.root.cert_pem)
    cert = x509.load_pem_x509_certificate(leaf.cert_pem.encode())
    assert cert.public_key() == key.public_key()


async def test_a_csr_with_a_forged_signature_is_refused_by_the_worker(
    state: State, caplog: pytest.LogCaptureFixture
) -> None:
    forged = _forged(build_csr(_identity(state, "web"), new_key()))
    checked = read_csr(forged, verify=False)  # what the server's front end reads
    with caplog.at_level(logging.DEBUG, logger="loom.ca"), pytest.raises(CsrError) as err:
        await state.certs.sign_csr(checked)
    assert "signature is not valid" in str(err.value)
    assert "signed a CSR" not in caplog.text


async def test_a_worker_refuses_a_proof_whose_signature_covers_other_bytes(
    state: State,
) -> None:
    """The worker checks the proof it is given, not a reading of its own: the self-signature
    of one CSR over the bytes of another (whose SAN names another service) is refused, and
    nothing is signed."""
    pool = state.certs._pool
    assert pool is not None
    web = read_csr(build_csr(_identity(state, "web"), new_key())).proof
    db = read_csr(build_csr(_identity(state, "db"), new_key())).proof
    assert web is not None and db is not None
    signer = state.certs._mesh()
    draft = signer.draft(_identity(state, "db"), db.spki, state.certs._clock())
    for proof in (replace(web, tbs=db.tbs), replace(db, spki=web.spki),
                  replace(web, signature=db.signature)):  # fmt: skip
        with pytest.raises(CsrError, match="signature is not valid"):
            await pool.sign(signer.root, proof, draft.tbs)
    signature = await pool.sign(signer.root, db, draft.tbs)  # the real one still signs
    assert _chains_to(signer.finish(draft, signature).cert_pem, state.certs.root.cert_pem)


async def test_after_a_rotation_workers_sign_with_the_new_root(
    state: State, tmp_path: Path
) -> None:
    new = ScratchCA(tmp_path, "Second Root")
    body = {"Provider": "consul", "Config": {"PrivateKey": new.key_pem, "RootCert": new.cert_pem}}
    await state.ca_config.update(body)
    leaf = await state.certs.sign_csr(build_csr(_identity(state, "web"), new_key()))
    assert _chains_to(leaf.cert_pem, new.cert_pem)


async def test_when_the_workers_die_signing_goes_on_in_process(
    state: State, caplog: pytest.LogCaptureFixture
) -> None:
    pool = state.certs._pool
    assert pool is not None
    for pid in pool.pids:
        os.kill(pid, signal.SIGKILL)
    for worker in list(pool._workers):
        await worker.reader  # ends when the pipe closes
    assert pool.running == 0
    with caplog.at_level(logging.DEBUG, logger="loom.ca"):
        leaf = await state.certs.sign_csr(build_csr(_identity(state, "web"), new_key()))
    assert "in-process" in caplog.text
    assert _chains_to(leaf.cert_pem, state.certs.root.cert_pem)


async def test_the_root_key_is_on_no_worker_s_command_line_or_environment(state: State) -> None:
    pool = state.certs._pool
    assert pool is not None and pool.pids
    key_body = "".join(state.certs.root.key_pem.splitlines()[1:-1])
    for pid in pool.pids:
        for name in ("cmdline", "environ"):
            raw = Path(f"/proc/{pid}/{name}").read_bytes().decode(errors="replace")
            assert key_body[:40] not in raw.replace("\n", "")
        limits = Path(f"/proc/{pid}/limits").read_text()
        core = next(line for line in limits.splitlines() if line.startswith("Max core"))
        assert core.split()[4:6] == ["0", "0"]  # no core dump can carry the key to disk
