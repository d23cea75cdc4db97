"""``loom demo --datacenters 2``: two federated datacenters on this machine, step by step.

What issue 15's last part asks to see, with the real CLI commands it shows: ``loom local up``
for dc1 and for dc2 as its secondary (a server, node network and mesh gateway each, the
gateways on a WAN that is the only path between the two), static-server in dc2 (and in dc1,
for failover), static-client in dc1 with the upstream ``static-server:1234:dc2``; ``curl
localhost:1234`` from dc1 answered by dc2 through both gateways; a deny intention written in
dc1 (the primary) replicated to dc2 and enforced there by the server's sidecar, then allowed
again; and a service-resolver failover: static-client made again with the local upstream
``static-server:1234`` moves to dc2 when dc1's static-server is removed and comes back when
it runs again. Every expectation is
checked (exit 1 when one does not hold) and everything is removed at the end, on success,
failure or Ctrl-C. Root only: the pods are network namespaces.
"""

from __future__ import annotations

import os
import socket
import subprocess
import tempfile
import time
from pathlib import Path

from loom.demo.walkthrough import DemoFailed, Walkthrough

DC1, DC2 = "dc1", "dc2"
_PORT_STEP = 10  # loom.local.datacenters.PORT_STEP: dc2's ports are dc1's + 10
_DEADLINE_S = 30.0
"""How long a cross-datacenter change may take to show (replication, pushes, a loaded box)."""


def _port_pair(taken: tuple[int, ...] = ()) -> int:
    """A free loopback port whose +10 (dc2's) is free too, neither of them in ``taken``."""
    for _ in range(50):
        with socket.socket() as a:
            a.bind(("127.0.0.1", 0))
            port = int(a.getsockname()[1])
            try:
                with socket.socket() as b:
                    b.bind(("127.0.0.1", port + _PORT_STEP))
            except OSError:
                continue
        clash = {port, port + _PORT_STEP} & {p + d for p in taken for d in (0, _PORT_STEP)}
        if port + _PORT_STEP < 65536 and not clash:
            return port
    raise DemoFailed("no two free loopback ports 10 apart")


class TwoDatacenters(Walkthrough):
    """The walkthrough's steps, with ``curl`` from a dc1 pod retried until it shows."""

    def curl(self, pod: str, url: str, text: str | None, dc: str = DC1) -> None:
        """``curl`` inside ``pod`` until it answers ``text`` (None: until it fails)."""
        via = ["loom", "local", "exec", pod, "--datacenter", dc, "--"]
        argv = [*self.loom, *via[1:], "curl", "--silent", "--max-time", "3", url]
        deadline = time.monotonic() + _DEADLINE_S
        while True:
            out = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=60)
            got = out.stdout.strip()
            good = (out.returncode == 0 and got == text) if text else out.returncode != 0
            if good or time.monotonic() > deadline:
                break
            time.sleep(0.3)
        print(f"    $ loom local exec {pod} -- curl --silent {url}")
        if got:
            print(f"      {got}")
        if out.returncode:
            print(f"      command terminated with exit code {out.returncode}")
        if not good:
            want = repr(text) if text else "a failure"
            raise DemoFailed(f"step {self.step_no}: expected {want}, got exit "
                             f"{out.returncode} and {got!r}")  # fmt: skip
        print(f"    ok: {text!r}" if text else f"    ok: refused (exit code {out.returncode})")


def federation_demo() -> None:
    root = Path(tempfile.mkdtemp(prefix="loom-fed-", dir="/run" if os.path.isdir("/run") else None))
    root.chmod(0o711)  # the sidecars traverse it to their datacenter's (0710) state directory
    http = _port_pair()
    grpc = _port_pair(taken=(http,))
    dc1_http, dc2_http = f"127.0.0.1:{http}", f"127.0.0.1:{http + _PORT_STEP}"
    env = {
        "LOOM_LOCAL_PREFIX": "lfed",
        "LOOM_LOCAL_STATE_DIR": str(root / "local"),
        "LOOM_LOCAL_SUBNET": "10.248.0.0/16",
        "LOOM_LOCAL_WAN_SUBNET": "10.246.0.0/24",
        "LOOM_LOCAL_DATA_DIR": "-",
        "LOOM_LOCAL_HTTP_ADDR": dc1_http,
        "LOOM_LOCAL_GRPC_ADDR": f"127.0.0.1:{grpc}",
        "LOOM_HTTP_ADDR": dc1_http,
        "LOOM_HTTP_TOKEN_FILE": str(root / "local" / "management.token"),
    }
    w = TwoDatacenters(env)
    dc2 = ("--datacenter", DC2)
    try:
        w.step(
            "two datacenters on one machine",
            "dc1 (the primary) and dc2 each get a Loom server, a node network and pods of",
            "their own; dc2's server joins dc1's over loopback (WAN federation). Each has a",
            "mesh gateway pod: its LAN address on its datacenter's network, its WAN address",
            "on a bridge only the gateways are on. No pod of one datacenter has a route to",
            "the other's: the gateways are the only way across. proxy-defaults",
            "MeshGateway.Mode = local in both (traffic leaves through the local gateway).",
        )
        w.loom_cmd("local", "up", "--acl-default-policy", "allow")
        w.loom_cmd("local", "up", *dc2, "--primary-datacenter", DC1, "--acl-default-policy",
                   "allow")  # fmt: skip
        w.loom_cmd("catalog", "datacenters")
        w.step(
            "static-server in dc2 (and one in dc1, for failover later)",
            "Each answers with the name of its datacenter.",
        )
        for dc in (DC2, DC1):
            w.loom_cmd("local", "run", "static-server", "--datacenter", dc, "--port", "8080",
                       "--", *w.loom, "http-echo", "-text", f"hello from {dc}",
                       "-listen", ":8080")  # fmt: skip
        w.step(
            "static-client in dc1 with the upstream static-server:1234:dc2",
            "The annotation's third field names the datacenter: localhost:1234 in the client",
            "is static-server of dc2, although dc1 has one too.",
        )
        w.loom_cmd("local", "run", "static-client", "-a",
                   "connect-service-upstreams=static-server:1234:dc2",
                   "--", "sleep", "infinity")  # fmt: skip
        w.step(
            "curl localhost:1234 from dc1 reaches static-server in dc2",
            "client sidecar -> dc1's gateway -> WAN -> dc2's gateway -> server sidecar, with",
            "mTLS end to end (the gateways route on SNI and never decrypt).",
        )
        w.curl("static-client", "localhost:1234", "hello from dc2")
        w.step(
            "a deny intention written in dc1 takes effect in dc2",
            "Intentions are replicated from the primary; dc2's static-server sidecar enforces",
            "it, so the connection from dc1 is refused there.",
        )
        w.loom_cmd("intention", "create", "--deny", "--replace", "static-client", "static-server")
        w.curl("static-client", "localhost:1234", None)
        w.loom_cmd("intention", "get", "--http-addr", dc2_http, "static-client", "static-server")
        w.step("allow it again (in dc1): traffic from dc1 to dc2 flows again")
        w.loom_cmd("intention", "create", "--allow", "--replace", "static-client", "static-server")
        w.curl("static-client", "localhost:1234", "hello from dc2")
        w.step(
            "service-resolver failover: static-server of dc1 fails over to dc2",
            "A resolver written in dc1 (replicated to dc2): when static-server has no healthy",
            "instance here, its callers go to dc2's, and come back when dc1's return.",
            "static-client is made again with the upstream static-server:1234 (its own",
            "datacenter's).",
        )
        resolver = root / "static-server-resolver.json"  # removed at the end
        resolver.write_text('{"Kind": "service-resolver", "Name": "static-server",\n'
                            ' "Failover": {"*": {"Datacenters": ["dc2"]}}}\n')  # fmt: skip
        w.loom_cmd("config", "write", str(resolver))
        w.loom_cmd("local", "rm", "static-client")
        w.loom_cmd("local", "run", "static-client", "-a",
                   "connect-service-upstreams=static-server:1234", "--", "sleep",
                   "infinity")  # fmt: skip
        w.curl("static-client", "localhost:1234", "hello from dc1")
        w.step("dc1's static-server stops: the calls fail over to dc2")
        w.loom_cmd("local", "rm", "static-server")
        w.curl("static-client", "localhost:1234", "hello from dc2")
        w.step("dc1's static-server is back: the calls come back to dc1")
        w.loom_cmd("local", "run", "static-server", "--port", "8080", "--", *w.loom, "http-echo",
                   "-text", "hello from dc1", "-listen", ":8080")  # fmt: skip
        w.curl("static-client", "localhost:1234", "hello from dc1")
    finally:
        w.step("clean up: both datacenters (pods, gateways, servers, networks) and the WAN")
        w.loom_cmd("local", "down", *dc2, check=False)
        w.loom_cmd("local", "down", check=False)
        (root / "static-server-resolver.json").unlink(missing_ok=True)
        for leftover in (root / "local", root):
            if leftover.exists() and not any(leftover.iterdir()):
                leftover.rmdir()
        if root.exists():
            print(f"    (left {root}: see what `down` could not remove there)")
