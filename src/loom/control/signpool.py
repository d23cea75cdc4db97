"""A pool of CA signing workers, so CSR signing is not bound to the server's one GIL.

``loom server --ca-sign-workers N`` starts N ``loom.control.signworker`` processes beside
itself. The server's process still parses the request, reads whom the CSR names (without the
costly signature check), checks the token's ``service:write`` on it and writes the leaf's
``TBSCertificate``; a worker then does the crypto, the CSR's proof of possession and the
CA's signature (``loom.control.signworker``), and sends the signature back. Each worker gets
the signing key (the root's, or in a secondary datacenter its intermediate's) over its stdin
pipe when it starts and again whenever it changes, nothing else: the key is not put on a
command line, in an environment or in a file. Every leaf's TBS is written by the ``Signer``
whose key the workers were given last (``sign`` sends a new key first when it is not):
frames on a pipe keep their order, so a TBS always meets the key of its issuer.

Requests that arrive in the same turn of the event loop go to a worker in one frame (a
batch), each to the worker with the fewest waiting; answers come back in order. Workers start
in the background: until one is ready (or when every worker has died), ``Certs`` signs
in-process, so a server never waits on its pool and 0 workers is simply in-process signing.
"""

from __future__ import annotations

import asyncio
import json
import logging
import os
import sys
from pathlib import Path

from loom.ca.authority import Root
from loom.ca.csr import CsrError, Proof
from loom.ca.errors import CAError
from loom.control.errors import ControlError
from loom.control.signworker import CSR_FAULT, HEADER, MAX_FRAME, OK, answers, frame, sign_batch

log = logging.getLogger("loom.ca")
_STOP_S = 2.0
_START_S = 30.0


class SignWorkerError(ControlError):
    """A signing worker died, or answered with something other than a leaf."""


def default_workers(cpus: int | None = None) -> int:
    """Workers for ``--ca-sign-workers`` when not given: none on one CPU, one on two or
    three, else half the CPUs (the other half for the server's own process, which still
    parses every request, checks its ACLs and writes each leaf's TBS), at most 4. A worker
    takes a signing's two ECDSA operations, about 40% of its CPU, off the server's process:
    on 2 shared cores, 1,931/s against 1,547/s in-process (``bench/leaf_sign.py``, 4
    alternating rounds at load 2.6)."""
    count = (os.cpu_count() or 1) if cpus is None else cpus
    if count < 2:
        return 0
    return 1 if count < 4 else min(4, count // 2)


def _root_frame(root: Root) -> bytes:
    return frame(json.dumps({"op": "root", "key": root.key_pem}).encode())


async def _hello(proc: asyncio.subprocess.Process) -> None:
    """Wait for a new worker's ``{"ready": true}`` (``SignWorkerError`` if it never comes)."""
    assert proc.stdout is not None
    try:
        head = await asyncio.wait_for(proc.stdout.readexactly(HEADER.size), _START_S)
        (size,) = HEADER.unpack(head)
        if size > MAX_FRAME:
            raise SignWorkerError("a new CA signing worker sent a frame too big for a hello")
        hello = json.loads(await asyncio.wait_for(proc.stdout.readexactly(size), _START_S))
    except (TimeoutError, asyncio.IncompleteReadError, ValueError) as exc:
        raise SignWorkerError(f"a CA signing worker did not start: {exc!r}") from exc
    if hello != {"ready": True}:
        raise SignWorkerError(f"a new CA signing worker said {hello!r}")


class _Worker:
    def __init__(self, proc: asyncio.subprocess.Process) -> None:
        assert proc.stdin is not None and proc.stdout is not None
        self.proc = proc
        self._stdin = proc.stdin
        self._stdout = proc.stdout
        self.waiting: list[asyncio.Future[bytes]] = []
        """Sent, not yet answered, in the order sent (answers come back in that order)."""
        self._outbox: list[tuple[Proof | None, bytes]] = []
        self.alive = True
        self.reader = asyncio.get_running_loop().create_task(self._read())

    def send_root(self, root: Root) -> None:
        self._flush()  # requests queued before the rotation keep the order they came in
        self._stdin.write(_root_frame(root))

    def submit(self, item: tuple[Proof | None, bytes], future: asyncio.Future[bytes]) -> None:
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(item)
        self.waiting.append(future)

    def _flush(self) -> None:
        if not self._outbox or not self.alive:
            return
        batch, self._outbox = self._outbox, []
        self._stdin.write(frame(sign_batch(batch)))

    async def _read(self) -> None:
        try:
            while True:
                head = await self._stdout.readexactly(HEADER.size)
                (size,) = HEADER.unpack(head)
                if size > MAX_FRAME:
                    raise SignWorkerError(f"signing worker sent a frame of {size} bytes")
                body = await self._stdout.readexactly(size)
                done = 0
                for status, data in answers(body):
                    if done >= len(self.waiting):
                        raise SignWorkerError("signing worker answered more than it was asked")
                    future = self.waiting[done]
                    done += 1
                    if future.done():
                        continue
                    if status == OK:
                        future.set_result(data)
                    elif status == CSR_FAULT:
                        future.set_exception(CsrError(data.decode(errors="replace")))
                    else:
                        future.set_exception(SignWorkerError(data.decode(errors="replace")))
                del self.waiting[:done]
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, CAError) as exc:
            self._die(SignWorkerError(f"signing worker {self.proc.pid} stopped: {exc!r}"))
        except SignWorkerError as exc:
            self._die(exc)

    def _die(self, exc: SignWorkerError) -> None:
        if self.alive:
            log.error("%s", exc)
        self.alive = False
        for future in self.waiting:
            if not future.done():
                future.set_exception(exc)
        self.waiting.clear()

    async def stop(self) -> None:
        self.alive = False
        self._stdin.close()
        try:
            await asyncio.wait_for(self.proc.wait(), _STOP_S)
        except TimeoutError:
            self.proc.kill()
            await self.proc.wait()
        await self.reader


class SignPool:
    """``count`` signing workers; ``sign`` sends a checked-for-ACL CSR to one of them."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._workers: list[_Worker] = []
        self._closed = False
        self._root: Root | None = None
        """The CA whose key the workers were given last."""

    @property
    def ready(self) -> bool:
        """Whether some worker can sign now (else the caller signs in-process)."""
        return any(w.alive for w in self._workers)

    @property
    def running(self) -> int:
        """How many workers can sign now."""
        return sum(w.alive for w in self._workers)

    @property
    def pids(self) -> list[int]:
        """Process IDs of the running workers."""
        return [w.proc.pid for w in self._workers if w.alive]

    async def start(self, root: Root | None) -> None:
        """Start the workers and hand each the signing CA's key (or, if None, the
        one ``set_root`` gives later: a secondary before the primary signed its
        intermediate); a worker that cannot start is logged and left out (signing stays
        in-process if none does)."""
        if root is not None:
            self._root = root
        package = str(Path(__file__).resolve().parents[2])
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(p for p in (package, env.get("PYTHONPATH")) if p)
        for _ in range(self.count):
            if self._closed:
                return
            try:
                proc = await asyncio.create_subprocess_exec(
                    sys.executable, "-m", "loom.control.signworker",
                    stdin=asyncio.subprocess.PIPE, stdout=asyncio.subprocess.PIPE, env=env,
                )  # fmt: skip
            except OSError as exc:
                log.error("cannot start a CA signing worker: %s", exc)
                continue
            try:
                await _hello(proc)
            except SignWorkerError as exc:
                log.error("%s", exc)
                proc.kill()
                await proc.wait()
                continue
            worker = _Worker(proc)
            if self._closed:  # closed while the process started: stop it, keep nothing
                await worker.stop()
                return
            if self._root is not None:
                worker.send_root(self._root)
            self._workers.append(worker)
        log.info("CA signing: %d worker process(es)", len(self._workers))

    def set_root(self, root: Root) -> None:
        """Sign with this CA's key (a root's, or a secondary's intermediate's) from now on:
        after a rotation, or once a secondary has its intermediate."""
        self._root = root
        for worker in self._workers:
            if worker.alive:
                worker.send_root(root)

    async def sign(self, root: Root, proof: Proof | None, tbs: bytes) -> bytes:
        """``root``'s key's signature of a leaf's ``tbs``, once a worker has checked the CSR's
        ``proof`` (None: checked already); ``CsrError`` for the CSR's faults,
        ``SignWorkerError``."""
        live = [w for w in self._workers if w.alive]
        if not live:
            raise SignWorkerError("no CA signing worker is running")
        if self._root is None or root.cert_pem != self._root.cert_pem:
            self.set_root(root)  # before this TBS on every pipe: it meets its issuer's key
        worker = min(live, key=lambda w: len(w.waiting))
        future: asyncio.Future[bytes] = asyncio.get_running_loop().create_future()
        worker.submit((proof, tbs), future)
        return await future

    async def close(self) -> None:
        self._closed = True
        workers, self._workers = self._workers, []
        await asyncio.gather(*(w.stop() for w in workers))
