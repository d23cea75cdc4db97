"""A pool of CA signing workers, so CSR signing is not bound to the server's one GIL.

``loom server --ca-sign-workers N`` starts N ``loom.control.signworker`` processes beside
itself. The server's process still parses the request, reads whom the CSR names (without the
costly signature check) and checks the token's ``service:write`` on it; the worker then
checks the CSR in full and signs it. Each worker gets the signing CA (the root, or in a
secondary datacenter its intermediate; the key included) over its stdin pipe when it starts
and again whenever it changes, nothing else: the key is not put on a command line, in an
environment or in a file.

Requests that arrive in the same turn of the event loop go to a worker in one frame (a
batch), each to the worker with the fewest waiting; answers come back in order. Workers start
in the background: until one is ready (or when every worker has died), ``Certs`` signs
in-process, so a server never waits on its pool and 0 workers is simply in-process signing.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import os
import sys
from pathlib import Path
from typing import Any

from loom.ca.authority import Leaf, Root
from loom.ca.csr import CheckedCsr, CsrError
from loom.control.errors import ControlError
from loom.control.signworker import HEADER, MAX_FRAME, leaf_of_wire

log = logging.getLogger("loom.ca")
_STOP_S = 2.0
_START_S = 30.0


class SignWorkerError(ControlError):
    """A signing worker died, or answered with something other than a leaf."""


def default_workers(cpus: int | None = None) -> int:
    """Workers for ``--ca-sign-workers`` when not given: none below 4 CPUs, else half the
    CPUs (the other half for the server's own process, which still parses every request and
    checks its ACLs), at most 4. On 2 shared cores (``bench/leaf_sign.py``) a worker only
    adds the cost of the pipe, since no core is idle for it to use."""
    count = (os.cpu_count() or 1) if cpus is None else cpus
    return 0 if count < 4 else min(4, count // 2)


def _frame(message: dict[str, Any]) -> bytes:
    body = json.dumps(message, separators=(",", ":")).encode()
    return HEADER.pack(len(body)) + body


def _root_message(root: Root, chain: str) -> dict[str, Any]:
    return {"op": "root", "cert": root.cert_pem, "key": root.key_pem, "chain": chain,
            "trust_domain": root.trust_domain}  # fmt: skip


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
        self.waiting: list[tuple[int, asyncio.Future[Leaf]]] = []
        """Sent, not yet answered, in the order sent (answers come back in that order)."""
        self._outbox: list[dict[str, Any]] = []
        self.alive = True
        self.reader = asyncio.get_running_loop().create_task(self._read())

    def send_root(self, root: Root, chain: str) -> None:
        self._flush()  # requests queued before the rotation keep the order they came in
        self._stdin.write(_frame(_root_message(root, chain)))

    def submit(self, item: dict[str, Any], future: asyncio.Future[Leaf]) -> None:
        if not self._outbox:
            asyncio.get_running_loop().call_soon(self._flush)
        self._outbox.append(item)
        self.waiting.append((int(item["id"]), future))

    def _flush(self) -> None:
        if not self._outbox or not self.alive:
            return
        batch, self._outbox = self._outbox, []
        self._stdin.write(_frame({"op": "sign", "batch": batch}))

    async def _read(self) -> None:
        try:
            while True:
                head = await self._stdout.readexactly(HEADER.size)
                (size,) = HEADER.unpack(head)
                if size > MAX_FRAME:
                    raise SignWorkerError(f"signing worker sent a frame of {size} bytes")
                answers = json.loads(await self._stdout.readexactly(size))["batch"]
                for answer in answers:
                    ident, future = self.waiting.pop(0)
                    if answer.get("id") != ident:
                        raise SignWorkerError("signing worker answered out of order")
                    if future.done():
                        continue
                    try:
                        future.set_result(_leaf_or_raise(answer))
                    except (CsrError, SignWorkerError) as exc:
                        future.set_exception(exc)
        except (asyncio.IncompleteReadError, ConnectionError, ValueError, KeyError) as exc:
            self._die(SignWorkerError(f"signing worker {self.proc.pid} stopped: {exc!r}"))
        except SignWorkerError as exc:
            self._die(exc)

    def _die(self, exc: SignWorkerError) -> None:
        if self.alive:
            log.error("%s", exc)
        self.alive = False
        for _, future in self.waiting:
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


def _leaf_or_raise(answer: dict[str, Any]) -> Leaf:
    if "leaf" in answer:
        return leaf_of_wire(answer["leaf"])
    if answer.get("csr"):
        raise CsrError(str(answer["error"]))
    raise SignWorkerError(str(answer.get("error", "signing worker failed")))


class SignPool:
    """``count`` signing workers; ``sign`` sends a checked-for-ACL CSR to one of them."""

    def __init__(self, count: int) -> None:
        self.count = count
        self._workers: list[_Worker] = []
        self._next_id = 0
        self._closed = False
        self._root: tuple[Root, str] | None = None

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

    async def start(self, root: tuple[Root, str] | None) -> None:
        """Start the workers and hand each the signing CA and its chain (or, if None, the
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
                worker.send_root(*self._root)
            self._workers.append(worker)
        log.info("CA signing: %d worker process(es)", len(self._workers))

    def set_root(self, root: Root, chain: str) -> None:
        """Sign with this CA (a root, or a secondary's intermediate) from now on: after a
        rotation, or once a secondary has its intermediate."""
        self._root = (root, chain)
        for worker in self._workers:
            if worker.alive:
                worker.send_root(root, chain)

    async def sign(self, csr: CheckedCsr, now: dt.datetime, ttl: dt.timedelta) -> Leaf:
        """The leaf a worker signs for ``csr`` (which the worker checks in full, against the
        identity ``csr`` names); ``CsrError`` for the CSR's faults, ``SignWorkerError``."""
        live = [w for w in self._workers if w.alive]
        if not live:
            raise SignWorkerError("no CA signing worker is running")
        worker = min(live, key=lambda w: len(w.waiting))
        self._next_id += 1
        future: asyncio.Future[Leaf] = asyncio.get_running_loop().create_future()
        worker.submit(
            {"id": self._next_id, "csr": csr.pem, "expect": csr.identity.uri,
             "now": now.timestamp(), "ttl": ttl.total_seconds()},
            future,
        )  # fmt: skip
        return await future

    async def close(self) -> None:
        self._closed = True
        workers, self._workers = self._workers, []
        await asyncio.gather(*(w.stop() for w in workers))
