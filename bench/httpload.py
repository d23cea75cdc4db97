"""A cheap HTTP/1.1 load generator for benches that measure a server on the machine they run on.

``http.client`` in one thread per connection costs a few hundred microseconds of CPU per
request (request formatting, header parsing, the GIL handed between threads). On two cores
shared with the server that client takes CPU the server needs, so a bench measures the client
as much as the server. Here every request is prepared as bytes before timing, and one thread
drives every connection with ``selectors``: it writes the next prepared request when a
connection has fewer than ``depth`` in flight (``depth`` 1: one request at a time per
keep-alive connection, as real clients do; more: HTTP/1.1 pipelining) and reads answers by
their ``Content-Length`` only. Each answer's status is checked (any other than 200 fails the
run, naming the request), so no error is counted as a success.

``run`` returns the wall time and this thread's own CPU time, which a bench prints beside the
server's.
"""

from __future__ import annotations

import selectors
import socket
import time
from dataclasses import dataclass

_HEAD_END = b"\r\n\r\n"


class LoadError(RuntimeError):
    """An answer other than 200, or a connection the server closed mid-run."""


def prepare(method: str, path: str, host: str, headers: dict[str, str],
            body: bytes | None = None) -> bytes:  # fmt: skip
    """One request as the bytes sent on the wire (keep-alive, ``Content-Length`` framing)."""
    lines = [f"{method} {path} HTTP/1.1", f"Host: {host}"]
    lines += [f"{k}: {v}" for k, v in headers.items()]
    if body is not None:
        lines.append(f"Content-Length: {len(body)}")
    return ("\r\n".join(lines) + "\r\n\r\n").encode() + (body or b"")


@dataclass
class Result:
    elapsed_s: float
    """Wall time from the first write to the last answer."""
    client_cpu_s: float
    """CPU time this thread used meanwhile (the load generator's own cost)."""
    count: int


class _Conn:
    def __init__(self, addr: tuple[str, int], work: list[bytes]) -> None:
        self.sock = socket.create_connection(addr)
        self.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        self.sock.setblocking(False)
        self.work = work
        self.sent = 0
        self.done = 0
        self.buf = b""
        self.out = b""
        self.mask = 0

    def fill(self, depth: int) -> None:
        """Queue prepared requests until ``depth`` are in flight (or none are left)."""
        while self.sent < len(self.work) and self.sent - self.done < depth:
            self.out += self.work[self.sent]
            self.sent += 1

    def answers(self) -> int:
        """Consume whole answers from the buffer; how many were complete."""
        got = 0
        while True:
            end = self.buf.find(_HEAD_END)
            if end < 0:
                return got
            head = self.buf[:end]
            if not head.startswith(b"HTTP/1.1 200 "):
                line = head.split(b"\r\n", 1)[0].decode(errors="replace")
                raise LoadError(f"request {self.done + 1}: {line}")
            at = head.lower().find(b"\r\ncontent-length:")
            if at < 0:
                raise LoadError(f"request {self.done + 1}: an answer without Content-Length")
            stop = head.find(b"\r\n", at + 2)
            size = int(head[at + 17 : stop if stop >= 0 else len(head)])
            total = end + 4 + size
            if len(self.buf) < total:
                return got
            self.buf = self.buf[total:]
            self.done += 1
            got += 1


def connect(addr: str, shares: list[list[bytes]]) -> list[_Conn]:
    """One keep-alive connection per share of prepared requests, opened before timing."""
    host, port = addr.rsplit(":", 1)
    return [_Conn((host, int(port)), share) for share in shares]


def run(conns: list[_Conn], depth: int = 1) -> Result:
    """Send every connection's prepared requests, ``depth`` in flight per connection, and
    read every answer; closes the connections."""
    sel = selectors.DefaultSelector()
    cpu0, began = time.thread_time(), time.perf_counter()
    pending = 0
    for c in conns:
        c.fill(depth)
        pending += len(c.work)
        c.mask = selectors.EVENT_READ | selectors.EVENT_WRITE
        sel.register(c.sock, c.mask, c)
    try:
        while pending:
            for key, events in sel.select():
                c = key.data
                if events & selectors.EVENT_WRITE and c.out:
                    sent = c.sock.send(c.out)
                    c.out = c.out[sent:]
                if events & selectors.EVENT_READ:
                    data = c.sock.recv(1 << 18)
                    if not data:
                        raise LoadError("the server closed a connection mid-run")
                    c.buf += data
                    got = c.answers()
                    pending -= got
                    if got:
                        c.fill(depth)
                want = selectors.EVENT_READ | (selectors.EVENT_WRITE if c.out else 0)
                if want != c.mask:  # epoll_ctl only when the interest changes
                    c.mask = want
                    sel.modify(c.sock, want, c)
        elapsed, cpu = time.perf_counter() - began, time.thread_time() - cpu0
    finally:
        sel.close()
        for c in conns:
            c.sock.close()
    return Result(elapsed, cpu, sum(len(c.work) for c in conns))
