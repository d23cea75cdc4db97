"""A CA signing worker: a child process of `loom server` that does a CSR signing's crypto.

Signing a CSR is two ECDSA operations, the verify of the CSR's self-signature (its maker's
proof that it holds the key) and the CA's signature of the leaf, together most of a
signing's CPU. They hold the GIL, so one server process tops out near what one core signs.
``loom.control.signpool`` starts ``--ca-sign-workers`` of these
(``python -m loom.control.signworker``) and hands them those two operations only: the server's
own process keeps the HTTP API, the ACL checks, reading the CSR and writing the leaf's
``TBSCertificate`` (``Signer.draft``), so a worker gets bytes to check and bytes to sign and
sends back a signature: no parsing, no JSON, per CSR.

The wire is the worker's stdin and stdout, frames of a 4-byte big-endian length then a body:

- ``{"op": "root", "key": PEM}`` (JSON): sign with this key from now on (the root's, or a
  secondary datacenter's intermediate's; sent first, and again whenever it changes: a
  rotation, a new intermediate). The key reaches the worker only this way: never on its
  command line, in its environment or in a file, and the worker turns core dumps off so a
  crash cannot write it to disk either.
- ``S`` then a batch: a 4-byte count, then per CSR a hash byte (``HASH_CODES``; 0: the server
  already checked the proof) and four byte strings, each a 4-byte length then the bytes: the
  CSR's SubjectPublicKeyInfo, the bytes its self-signature covers, that signature, then the
  leaf's ``TBSCertificate``. The worker checks the proof (``check_proof``: the key, its curve,
  the hash, the signature) and only then signs the TBS. The answer is ``A``, the count, then
  per CSR in the same order a status byte (``OK``, ``CSR_FAULT``: the CSR's fault, a 400;
  ``FAILED``) and one byte string: the signature (DER), or the error's text.

The worker's first frame, once it has turned core dumps off, is ``{"ready": true}``. It
exits when its stdin closes (the server stopped or died).
"""

from __future__ import annotations

import contextlib
import json
import resource
import struct
import sys
from collections.abc import Iterator
from typing import BinaryIO

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from loom.ca.csr import CsrError, Proof, check_proof
from loom.ca.errors import CAError
from loom.ca.leafder import sign_tbs

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024
HASH_CODES = {"": 0, "sha256": 1, "sha384": 2, "sha512": 3}
"""The hash byte of a batch item: its proof's hash (0: no proof to check here)."""
_HASH_NAMES = {code: name for name, code in HASH_CODES.items()}
OK, CSR_FAULT, FAILED = 0, 1, 2
SIGN, ANSWER = b"S", b"A"


def field(data: bytes) -> bytes:
    """One byte string of a frame: its 4-byte length, then it."""
    return HEADER.pack(len(data)) + data


def frame(body: bytes) -> bytes:
    return HEADER.pack(len(body)) + body


class FrameReader:
    """Reads a frame's counts, bytes and byte strings in order (``CAError`` past its end)."""

    def __init__(self, body: bytes, start: int = 1) -> None:
        self._view = memoryview(body)
        self._pos = start

    def byte(self) -> int:
        if self._pos >= len(self._view):
            raise CAError("signing worker: truncated frame")
        self._pos += 1
        return int(self._view[self._pos - 1])

    def count(self) -> int:
        end = self._pos + HEADER.size
        if end > len(self._view):
            raise CAError("signing worker: truncated frame")
        (n,) = HEADER.unpack(self._view[self._pos : end])
        self._pos = end
        return int(n)

    def data(self) -> bytes:
        size = self.count()
        end = self._pos + size
        if end > len(self._view):
            raise CAError("signing worker: truncated frame")
        self._pos = end
        return bytes(self._view[end - size : end])


def sign_batch(items: list[tuple[Proof | None, bytes]]) -> bytes:
    """The body of a sign frame for ``items``: (the CSR's proof, or None when the server
    checked it already; the leaf's TBS)."""
    parts = [SIGN, HEADER.pack(len(items))]
    for proof, tbs in items:
        if proof is None:
            parts += [b"\x00", field(b""), field(b""), field(b""), field(tbs)]
        else:
            code = HASH_CODES[proof.hash_name]
            parts += [bytes((code,)), field(proof.spki), field(proof.tbs),
                      field(proof.signature), field(tbs)]  # fmt: skip
    return b"".join(parts)


def answers(body: bytes) -> Iterator[tuple[int, bytes]]:
    """The (status, signature or error text) pairs of an answer frame, in order."""
    if body[:1] != ANSWER:
        raise CAError("signing worker: not an answer frame")
    fields = FrameReader(body)
    for _ in range(fields.count()):
        status = fields.byte()
        yield status, fields.data()


def _sign_one(key: ec.EllipticCurvePrivateKey | None, code: int, parts: list[bytes]) -> bytes:
    spki, request, signature, tbs = parts
    if key is None:
        return bytes((FAILED,)) + field(b"signing worker has no key yet")
    try:
        if code:
            name = _HASH_NAMES.get(code)
            if name is None:
                raise CsrError("CSR: signature must use SHA-256 or stronger")
            check_proof(Proof(name, spki, request, signature))
        answer = sign_tbs(key, tbs)
    except CsrError as exc:
        return bytes((CSR_FAULT,)) + field(str(exc).encode())
    except (CAError, ValueError, TypeError) as exc:
        return bytes((FAILED,)) + field(f"signing failed: {exc}".encode())
    return bytes((OK,)) + field(answer)


def _read(stream: BinaryIO) -> bytes | None:
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    if size > MAX_FRAME:
        raise CAError(f"signing worker: frame of {size} bytes")
    body = stream.read(size)
    return body if len(body) == size else None


def _write(stream: BinaryIO, body: bytes) -> None:
    stream.write(frame(body))
    stream.flush()


def _load_key(pem: str) -> ec.EllipticCurvePrivateKey:
    key = serialization.load_pem_private_key(pem.encode(), password=None)
    if not isinstance(key, ec.EllipticCurvePrivateKey):
        raise CAError("signing worker: the CA key is not an EC key")
    return key


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Say ``{"ready": true}``, then answer frames from ``inp`` on ``out`` until ``inp``
    ends."""
    _write(out, json.dumps({"ready": True}).encode())
    key: ec.EllipticCurvePrivateKey | None = None
    while (body := _read(inp)) is not None:
        if body[:1] == SIGN:
            fields = FrameReader(body)
            count = fields.count()
            parts = [ANSWER, HEADER.pack(count)]
            for _ in range(count):
                code = fields.byte()
                parts.append(_sign_one(key, code, [fields.data() for _ in range(4)]))
            _write(out, b"".join(parts))
        else:
            message = json.loads(body)
            if message["op"] == "root":
                key = _load_key(message["key"])


def main() -> int:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash must not write the key out
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        serve(sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
