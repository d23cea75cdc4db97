"""The workload's key and CSR, made in a short-lived child process so ``cryptography`` never
stays resident in the agent.

The agent lives beside every Envoy for the pod's whole life, and issue 17 wants it small
(<= 30 MB RSS). ``cryptography`` with its OpenSSL costs it about 10 MB once imported, and a
Python process never gives that back; yet the agent needs it only for a moment at each
rotation (about every half leaf TTL). So ``make_key_and_csr`` runs ``python -m
loom.dataplane.keygen`` (this module), hands it the SPIFFE ID on stdin, and reads the PEM
key and CSR back on its stdout: the key crosses a pipe between the agent and its own child,
never a file or the network. Measured by ``bench/dataplane_rss.py``; the child's start (an
interpreter and ``cryptography``'s import) is the price, paid once per rotation.
"""

from __future__ import annotations

import asyncio
import json
import os
import sys

from loom.ca.spiffe import SpiffeError, parse_spiffe_id
from loom.dataplane.errors import DataplaneError

TIMEOUT_S = 60.0
"""How long the child may take (an interpreter start and one P-256 key on a loaded machine)."""
MAX_OUTPUT = 64 * 1024
"""The most the child may print (a P-256 key and a CSR are about 1 KB)."""


def child_argv() -> tuple[list[str], dict[str, str]]:
    """The child's command line and environment: this interpreter with this ``sys.path``.

    An agent run under a pod's UID (``loom local``: ``setpriv`` after root started it) may
    not be able to reach ``sys.executable`` by its path (a directory on the way is root's
    only), so then the child is ``/proc/self/exe``, the same binary opened through the
    kernel's link; it would compute another ``sys.path`` from that name, hence ours is
    handed to it in ``PYTHONPATH``."""
    exe = sys.executable if os.access(sys.executable, os.X_OK) else "/proc/self/exe"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(p for p in sys.path if p)}
    return [exe, "-m", "loom.dataplane.keygen"], env


async def make_key_and_csr(spiffe_uri: str) -> tuple[str, str]:
    """A fresh P-256 key and a CSR naming ``spiffe_uri``, both PEM, made by a child process."""
    argv, env = child_argv()
    try:
        child = await asyncio.create_subprocess_exec(
            *argv, env=env, stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
    except OSError as exc:
        raise DataplaneError(f"cannot start the key maker {argv[0]}: {exc}") from exc
    try:
        out, err = await asyncio.wait_for(child.communicate(spiffe_uri.encode()), TIMEOUT_S)
    except TimeoutError as exc:
        child.kill()
        await child.wait()
        raise DataplaneError(f"the key maker did not answer within {TIMEOUT_S:.0f} s") from exc
    if child.returncode != 0:
        tail = err.decode(errors="replace").strip().splitlines()[-1:] or ["no output"]
        raise DataplaneError(f"the key maker failed ({child.returncode}): {tail[0]}")
    try:
        if len(out) > MAX_OUTPUT:
            raise ValueError(f"{len(out)} bytes of output")
        made = json.loads(out)
        return str(made["key"]), str(made["csr"])
    except (ValueError, KeyError, TypeError) as exc:
        raise DataplaneError(f"the key maker's answer is malformed: {exc!r}") from exc


def main() -> int:
    """The child: a SPIFFE ID on stdin, ``{"key": PEM, "csr": PEM}`` on stdout."""
    from loom.ca.csr import build_csr, key_pem, new_key

    try:
        identity = parse_spiffe_id(sys.stdin.read().strip())
    except SpiffeError as exc:
        print(f"not a SPIFFE service ID: {exc}", file=sys.stderr)
        return 2
    key = new_key()
    json.dump({"key": key_pem(key), "csr": build_csr(identity, key)}, sys.stdout)
    return 0


if __name__ == "__main__":
    sys.exit(main())
