"""Helpers for e2e tests in network namespaces: tiny listeners and clients run inside pods.

A listener process binds a few TCP/UDP sockets and answers every TCP connection with one line
``<label> port=<local port> orig=<SO_ORIGINAL_DST>`` (what the nat table made of the
destination) and every UDP datagram with ``<label> port=<local port>``. A client is a one-shot
process printing the line it got back. Both run through ``netns_exec_argv``, so they carry the
UID the rules look at. Every process is bounded in time and killed by ``Processes.stop_all``.
"""

from __future__ import annotations

import contextlib
import os
import select
import subprocess
import sys
from collections.abc import Sequence

from loom.local.netns import netns_exec_argv

LISTENER = r"""
# specs: tcp:HOST:PORT, udp:HOST:PORT, tcp6:[HOST]:PORT
import selectors, socket, struct, sys, time
label, lifetime, specs = sys.argv[1], float(sys.argv[2]), sys.argv[3:]
deadline = time.monotonic() + lifetime
sel = selectors.DefaultSelector()
for spec in specs:
    proto, rest = spec.split(":", 1)
    host, port = rest.rsplit(":", 1)
    host = host.strip("[]")
    kind = socket.SOCK_DGRAM if proto.startswith("udp") else socket.SOCK_STREAM
    family = socket.AF_INET6 if proto.endswith("6") else socket.AF_INET
    s = socket.socket(family, kind)
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, int(port)))
    if kind == socket.SOCK_STREAM:
        s.listen(16)
    s.setblocking(False)
    sel.register(s, selectors.EVENT_READ, proto[:3])
print("ready", flush=True)
while time.monotonic() < deadline:
    for key, _ in sel.select(0.2):
        s = key.fileobj
        port = s.getsockname()[1]
        if key.data == "udp":
            data, peer = s.recvfrom(512)
            s.sendto(f"{label} port={port}\n".encode(), peer)
            continue
        try:
            conn, _ = s.accept()
        except BlockingIOError:
            continue
        try:  # SO_ORIGINAL_DST (80): a sockaddr_in, or a sockaddr_in6 from SOL_IPV6
            if s.family == socket.AF_INET6:
                raw = conn.getsockopt(socket.IPPROTO_IPV6, 80, 28)
                addr = socket.inet_ntop(socket.AF_INET6, raw[8:24])
                orig = f"[{addr}]:{struct.unpack('!H', raw[2:4])[0]}"
            else:
                raw = conn.getsockopt(socket.SOL_IP, 80, 16)
                orig = f"{socket.inet_ntoa(raw[4:8])}:{struct.unpack('!H', raw[2:4])[0]}"
        except OSError:
            orig = "untracked"
        conn.setblocking(True)
        conn.sendall(f"{label} port={port} orig={orig}\n".encode())
        conn.close()
"""

CLIENT = r"""
import socket, sys
proto, host, port = sys.argv[1], sys.argv[2], int(sys.argv[3])
try:
    if proto == "tcp":
        s = socket.create_connection((host, port), timeout=3)
        data = b""
        while chunk := s.recv(256):
            data += chunk
    else:
        s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_DGRAM)
        s.settimeout(3)
        s.sendto(b"query", (host, port))
        data, _ = s.recvfrom(512)
    print(data.decode().strip())
except OSError as exc:
    print(f"error: {exc}")
"""


class Processes:
    """Background processes a test started; ``stop_all`` ends every one of them."""

    def __init__(self) -> None:
        self.procs: list[subprocess.Popen[str]] = []

    def listen(
        self, netns: str, label: str, specs: Sequence[str], uid: int | None = None
    ) -> subprocess.Popen[str]:
        """Start a listener (``tcp:HOST:PORT`` / ``udp:HOST:PORT`` specs); waits until bound."""
        argv = [sys.executable, "-c", LISTENER, label, "120", *specs]
        proc = subprocess.Popen(
            netns_exec_argv(netns, argv, uid=uid),
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
        )
        self.procs.append(proc)
        assert proc.stdout is not None
        ready, _, _ = select.select([proc.stdout], [], [], 10)
        line = proc.stdout.readline() if ready else ""
        if line.strip() != "ready":
            proc.kill()
            _, err = proc.communicate(timeout=5)
            raise AssertionError(f"listener {label} did not start: {err.strip()}")
        return proc

    def stop_all(self) -> None:
        for proc in self.procs:
            if proc.poll() is None:
                proc.terminate()
        for proc in self.procs:
            try:
                proc.communicate(timeout=5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.communicate(timeout=5)
        self.procs.clear()


def dial(netns: str, proto: str, host: str, port: int, uid: int | None = None) -> str:
    """One TCP connection or UDP datagram from inside ``netns``; the reply line or error."""
    argv = [sys.executable, "-c", CLIENT, proto, host, str(port)]
    done = subprocess.run(
        netns_exec_argv(netns, argv, uid=uid), capture_output=True, text=True, timeout=15
    )
    return done.stdout.strip() or f"error: {done.stderr.strip()}"


def unique_prefix(letters: str) -> str:
    """``<letters><pid>``, at most 8 characters (LocalNetSettings' prefix limit)."""
    return f"{letters}{os.getpid() % 10 ** (8 - len(letters))}"


def our_netns(prefix: str) -> list[str]:
    """Network namespaces whose name starts with ``<prefix>-`` (made by this test)."""
    out = subprocess.run(["ip", "netns", "list"], capture_output=True, text=True, check=True)
    names = [line.split()[0] for line in out.stdout.splitlines() if line.strip()]
    return sorted(name for name in names if name.startswith(f"{prefix}-"))


def sweep(prefix: str) -> None:
    """Last-resort cleanup after a failed test: delete this test's own namespaces and
    /etc/netns entries (all named ``<prefix>-...``, a prefix unique to this process)."""
    for name in our_netns(prefix):
        subprocess.run(["ip", "netns", "del", name], capture_output=True, check=False)
    with contextlib.suppress(FileNotFoundError):
        for entry in os.listdir("/etc/netns"):
            if entry.startswith(f"{prefix}-"):
                subprocess.run(["rm", "-rf", f"/etc/netns/{entry}"], check=False)
