"""A CA signing worker: a child process of `loom server` that checks and signs CSRs.

Signing a CSR is CPU-bound crypto (an ECDSA verify of the CSR's self-signature, then the
leaf's signature) that holds the GIL, so one server process tops out near what one core
signs. ``loom.control.signpool`` starts ``--ca-sign-workers`` of these
(``python -m loom.control.signworker``) and spreads CSRs over them, while the server's own
process keeps the HTTP API, the ACL checks and the store.

The wire is the worker's stdin and stdout, frames of a 4-byte big-endian length then JSON:

- ``{"op": "root", "cert": PEM, "key": PEM, "chain": PEM, "trust_domain": TD}``: sign with
  this CA from now on: the root, or a secondary datacenter's intermediate (sent first, and
  again whenever it changes: a rotation, a new intermediate). The key reaches the
  worker only this way: never on its command line, in its environment or in a file, and the
  worker turns core dumps off so a crash cannot write it to disk either.
- ``{"op": "sign", "batch": [{"id", "csr", "expect", "now", "ttl"}, ...]}``: each CSR is
  read and checked in full here (``check_csr``: signature, key, one strict SPIFFE URI equal
  to ``expect``, the identity the server's ACL check allowed), then signed for ``ttl``
  seconds from ``now`` (a UNIX time: the server's clock, so tests keep theirs). The answer
  is one frame ``{"batch": [...]}`` in the same order, each ``{"id", "leaf": {...}}`` or
  ``{"id", "error": TEXT, "csr": bool}`` (``csr``: the CSR's fault, a 400).

The worker's first frame, once it has turned core dumps off, is ``{"ready": true}``. It
exits when its stdin closes (the server stopped or died).
"""

from __future__ import annotations

import contextlib
import datetime as dt
import json
import resource
import struct
import sys
from typing import Any, BinaryIO

from loom.ca.authority import Leaf, Signer, load_root
from loom.ca.csr import CsrError, check_csr
from loom.ca.errors import CAError
from loom.ca.spiffe import SpiffeError, parse_spiffe_id

HEADER = struct.Struct(">I")
MAX_FRAME = 64 * 1024 * 1024


def leaf_wire(leaf: Leaf) -> dict[str, Any]:
    """A signed leaf as the worker sends it (no private key: a CSR's leaf has none)."""
    return {
        "serial": leaf.serial,
        "cert_pem": leaf.cert_pem,
        "service": leaf.service,
        "uri": leaf.uri,
        "not_before": leaf.not_before.timestamp(),
        "not_after": leaf.not_after.timestamp(),
    }


def leaf_of_wire(data: dict[str, Any]) -> Leaf:
    """The ``Leaf`` a worker's answer describes."""
    return Leaf(
        serial=str(data["serial"]),
        cert_pem=str(data["cert_pem"]),
        key_pem="",
        service=str(data["service"]),
        uri=str(data["uri"]),
        not_before=dt.datetime.fromtimestamp(float(data["not_before"]), dt.UTC),
        not_after=dt.datetime.fromtimestamp(float(data["not_after"]), dt.UTC),
    )


def _read(stream: BinaryIO) -> bytes | None:
    head = stream.read(HEADER.size)
    if len(head) < HEADER.size:
        return None
    (size,) = HEADER.unpack(head)
    if size > MAX_FRAME:
        raise CAError(f"signing worker: frame of {size} bytes")
    body = stream.read(size)
    return body if len(body) == size else None


def _write(stream: BinaryIO, message: dict[str, Any]) -> None:
    body = json.dumps(message, separators=(",", ":")).encode()
    stream.write(HEADER.pack(len(body)) + body)
    stream.flush()


def _sign_one(signer: Signer | None, item: dict[str, Any]) -> dict[str, Any]:
    if signer is None:
        return {"id": item["id"], "error": "signing worker has no root yet", "csr": False}
    try:
        expected = parse_spiffe_id(str(item["expect"]))
        checked = check_csr(str(item["csr"]), expected)
        now = dt.datetime.fromtimestamp(float(item["now"]), dt.UTC)
        leaf = signer.sign(
            checked.identity, checked.spki, now, dt.timedelta(seconds=float(item["ttl"]))
        )
    except (CsrError, SpiffeError) as exc:
        return {"id": item["id"], "error": str(exc), "csr": True}
    except (CAError, ValueError, TypeError) as exc:
        return {"id": item["id"], "error": f"signing failed: {exc}", "csr": False}
    return {"id": item["id"], "leaf": leaf_wire(leaf)}


def serve(inp: BinaryIO, out: BinaryIO) -> None:
    """Say ``{"ready": true}``, then answer frames from ``inp`` on ``out`` until ``inp``
    ends."""
    _write(out, {"ready": True})
    signer: Signer | None = None
    while (frame := _read(inp)) is not None:
        message = json.loads(frame)
        if message["op"] == "root":
            root = load_root(message["cert"], message["key"], message["trust_domain"])
            signer = Signer(root, message["chain"])
        elif message["op"] == "sign":
            _write(out, {"batch": [_sign_one(signer, item) for item in message["batch"]]})


def main() -> int:
    resource.setrlimit(resource.RLIMIT_CORE, (0, 0))  # a crash must not write the key out
    with contextlib.suppress(BrokenPipeError, KeyboardInterrupt):
        serve(sys.stdin.buffer, sys.stdout.buffer)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
