"""The signing worker's wire: what the server sends (``sign_batch``) and what the worker
answers (``serve``), run here over in-memory streams, the worker's code as it runs in its
process (``tests/api/test_sign_workers.py`` runs the processes).

What must hold: the worker signs a leaf's TBS only after the CSR's proof checks out (key,
curve, hash, signature over the very bytes sent), answers every item of a batch in order with
its own status, says the CSR is at fault for a bad proof and that it failed for anything
else (no key yet), and a signature it returns verifies under the CA's public key.
"""

from __future__ import annotations

import datetime as dt
import io
import json
from dataclasses import replace

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec

from loom.ca.authority import Signer, new_root
from loom.ca.csr import Proof, build_csr, new_key, read_csr
from loom.ca.errors import CAError
from loom.ca.spiffe import SpiffeId
from loom.control.signworker import (
    CSR_FAULT,
    FAILED,
    HEADER,
    OK,
    answers,
    frame,
    serve,
    sign_batch,
)

NOW = dt.datetime(2026, 12, 2, 5, 0, tzinfo=dt.UTC)


def _frames(data: bytes) -> list[bytes]:
    out, pos = [], 0
    while pos < len(data):
        (size,) = HEADER.unpack(data[pos : pos + HEADER.size])
        out.append(data[pos + HEADER.size : pos + HEADER.size + size])
        pos += HEADER.size + size
    return out


def _run(*bodies: bytes) -> list[bytes]:
    """The worker's frames after its hello, for ``bodies`` sent in order."""
    out = io.BytesIO()
    serve(io.BytesIO(b"".join(frame(b) for b in bodies)), out)
    hello, *rest = _frames(out.getvalue())
    assert json.loads(hello) == {"ready": True}
    return rest


@pytest.fixture(scope="module")
def signer() -> Signer:
    return Signer(new_root("11111111-2222-3333-4444-555555555555.consul", NOW))


def _proof(signer: Signer, service: str) -> tuple[Proof, bytes]:
    identity = SpiffeId.of(signer.root.trust_domain, "default", "dc1", service)
    checked = read_csr(build_csr(identity, new_key()), verify=False)
    assert checked.proof is not None
    return checked.proof, signer.draft(identity, checked.spki, NOW).tbs


def _root_frame(signer: Signer) -> bytes:
    return json.dumps({"op": "root", "key": signer.root.key_pem}).encode()


def test_a_batch_is_answered_in_order_each_item_with_its_own_status(signer: Signer) -> None:
    good, good_tbs = _proof(signer, "web")
    other, other_tbs = _proof(signer, "db")
    items = [
        (good, good_tbs),
        (replace(good, tbs=other.tbs), good_tbs),  # a signature over other bytes
        (replace(good, hash_name="sha384"), good_tbs),  # a hash the signature was not made with
        (None, other_tbs),  # the server checked this one's proof itself
    ]
    (answer,) = _run(_root_frame(signer), sign_batch(items))
    got = list(answers(answer))
    assert [status for status, _ in got] == [OK, CSR_FAULT, CSR_FAULT, OK]
    assert "signature is not valid" in got[1][1].decode()
    ca_key = serialization.load_pem_private_key(signer.root.key_pem.encode(), None)
    assert isinstance(ca_key, ec.EllipticCurvePrivateKey)
    for (_, signature), tbs in ((got[0], good_tbs), (got[3], other_tbs)):
        ca_key.public_key().verify(signature, tbs, ec.ECDSA(hashes.SHA256()))  # raises if not


def test_a_proof_with_a_key_that_is_not_ec_or_garbage_is_the_csr_s_fault(signer: Signer) -> None:
    good, tbs = _proof(signer, "web")
    (answer,) = _run(_root_frame(signer), sign_batch([(replace(good, spki=b"\x30\x03junk"), tbs)]))
    ((status, text),) = answers(answer)
    assert status == CSR_FAULT and "public key cannot be read" in text.decode()


def test_before_it_has_a_key_the_worker_fails_every_item_and_signs_nothing(
    signer: Signer,
) -> None:
    good, tbs = _proof(signer, "web")
    (answer,) = _run(sign_batch([(good, tbs), (None, tbs)]))
    assert [(s, t.decode()) for s, t in answers(answer)] == [
        (FAILED, "signing worker has no key yet")
    ] * 2


def test_a_truncated_answer_is_an_error_not_a_short_batch() -> None:
    body = b"A" + HEADER.pack(2) + bytes((OK,)) + HEADER.pack(3) + b"sig"
    with pytest.raises(CAError, match="truncated"):
        list(answers(body))
