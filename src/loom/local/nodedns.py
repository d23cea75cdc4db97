"""The node's DNS server of the local mesh (the local kube-dns): dnsmasq in the node namespace.

When ``dnsmasq`` is installed, ``loom local up`` runs it on the bridge address and the pods'
resolv.conf names it: their DNS proxies forward what the mesh does not know there, and Envoy
resolves external-service hosts through it. It answers the names of the hosts file
(``add_host``) and NXDOMAIN for everything else. Its PID is recorded in the state directory
the moment it is spawned, so ``down`` finds it even if ``up`` was killed.
"""

from __future__ import annotations

import json
import os
import shutil
import signal
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING

from loom.local import processes
from loom.local.errors import LocalError, state_io
from loom.local.netns import netns_exec_argv

if TYPE_CHECKING:
    from loom.local.settings import LocalSettings


def dns_pid(s: LocalSettings) -> int | None:
    """The running node DNS server's PID, or None."""
    try:
        pid = int(json.loads(s.dns_file.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None
    return pid if processes.alive(pid) else None


def start(s: LocalSettings) -> None:
    """dnsmasq on the bridge address, answering names of ``hosts_file`` (when installed).

    Pods forward what their DNS proxy does not know here, and Envoy resolves external
    hosts through it, as pods on Kubernetes use the cluster DNS.
    """
    exe = shutil.which("dnsmasq")
    if exe is None or dns_pid(s) is not None:
        return
    with state_io("cannot create the node DNS hosts file"):
        s.hosts_file.touch()
    log = s.net.state_dir / "node-dns.log"
    argv = netns_exec_argv(s.net.node_netns, [
        exe, "--keep-in-foreground", "--no-resolv", "--no-hosts", "--bind-interfaces",
        f"--listen-address={s.net.gateway}", "--port=53", "--user=root",
        f"--addn-hosts={s.hosts_file}", "--log-facility=-", "--conf-file=/dev/null",
        # Authoritative for everything: unknown names are NXDOMAIN, not REFUSED (which
        # stops resolvers such as Envoy's c-ares in the middle of a search list).
        "--local=/#/",
        f"--pid-file={s.net.state_dir / 'dnsmasq.pid'}",
    ])  # fmt: skip
    pid = processes.spawn(argv, log)
    try:
        with state_io("cannot record the node DNS server"):
            s.dns_file.write_text(json.dumps({"pid": pid}))
        time.sleep(0.2)
        if not processes.alive(pid):
            raise LocalError(f"the node DNS server (dnsmasq) exited: {processes.tail(log, 3)}")
    except BaseException:
        processes.stop(pid)
        s.dns_file.unlink(missing_ok=True)
        raise


def stop(s: LocalSettings) -> None:
    """Stop it and remove its files."""
    dns = dns_pid(s)
    if dns is not None:
        processes.stop(dns)
    state = s.net.state_dir
    with state_io(f"cannot clean up {state}"):
        for path in (s.dns_file, s.hosts_file, state / "node-dns.log",
                     state / "dnsmasq.pid"):  # fmt: skip
            path.unlink(missing_ok=True)


def add_host(s: LocalSettings, name: str, address: str) -> None:
    """Let pods resolve ``name`` to ``address`` through the node's DNS server."""
    with state_io("cannot add to the node DNS hosts file"), open(s.hosts_file, "a") as out:
        out.write(f"{address} {name}\n")
    _reload(s)


def set_owned_hosts(s: LocalSettings, owner: str, entries: Sequence[tuple[str, str]]) -> None:
    """Replace the hosts-file lines marked ``owner`` (``loom local apply``'s Service names)
    by ``entries`` (address, name); other lines are kept. Nothing without dnsmasq."""
    if dns_pid(s) is None:
        return
    mark = f"# {owner}"
    with state_io("cannot rewrite the node DNS hosts file"):
        kept = [line for line in s.hosts_file.read_text().splitlines()
                if not line.endswith(mark)]  # fmt: skip
        lines = kept + [f"{address} {name} {mark}" for address, name in entries]
        tmp = s.hosts_file.with_suffix(".tmp")
        tmp.write_text("".join(line + "\n" for line in lines))
        tmp.replace(s.hosts_file)
    _reload(s)


def _reload(s: LocalSettings) -> None:
    pid = dns_pid(s)
    if pid is None:
        raise LocalError("no node DNS server runs (install dnsmasq)")
    try:
        os.kill(pid, signal.SIGHUP)  # dnsmasq re-reads --addn-hosts
    except ProcessLookupError as exc:
        raise LocalError("the node DNS server (dnsmasq) exited") from exc
