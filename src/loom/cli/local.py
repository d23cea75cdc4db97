"""``loom local``: a mesh on this machine, network namespaces as pods (root required).

Environment overrides (tests, several meshes side by side): ``LOOM_LOCAL_PREFIX``,
``LOOM_LOCAL_STATE_DIR``, ``LOOM_LOCAL_SUBNET``, ``LOOM_LOCAL_DATA_DIR`` (``-`` for an
in-memory store), ``LOOM_LOCAL_HTTP_ADDR``, ``LOOM_LOCAL_GRPC_ADDR``. ACLs are on (default
deny) unless ``loom local up`` is given ``--acl-default-policy allow`` or ``--no-acls``; the
other ``loom local`` commands follow what the running server was started with.
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from loom import defaults

if TYPE_CHECKING:
    from loom.cli import Commands
    from loom.local.mesh import LocalMesh


def mesh_from_env(say: bool = True) -> LocalMesh:
    from loom.local.mesh import LocalMesh, LocalSettings
    from loom.local.netns import LocalNetSettings

    env = os.environ
    net = LocalNetSettings(
        prefix=env.get("LOOM_LOCAL_PREFIX", "loom"),
        subnet=env.get("LOOM_LOCAL_SUBNET", "10.244.0.0/16"),
        state_dir=Path(env.get("LOOM_LOCAL_STATE_DIR", "/run/loom/local")),
    )
    data = env.get("LOOM_LOCAL_DATA_DIR", "/var/lib/loom/local")
    settings = LocalSettings(
        net=net,
        http_addr=env.get("LOOM_LOCAL_HTTP_ADDR", defaults.HTTP_ADDR),
        grpc_addr=env.get("LOOM_LOCAL_GRPC_ADDR", defaults.GRPC_ADDR),
        data_dir=None if data == "-" else Path(data),
    )
    return LocalMesh(settings, say=(lambda m: print(m, flush=True)) if say else None)


def _ports(text: list[str] | None) -> list[int]:
    from loom.local.workload import WorkloadError

    out = []
    for item in text or []:
        for part in item.split(","):
            if not part.strip().isdigit() or not 0 < int(part) < 65536:
                raise WorkloadError(f"--port {part!r}: expected a port number 1-65535")
            out.append(int(part))
    return out


def _up(args: argparse.Namespace) -> int:
    mesh = mesh_from_env()
    policy = None if args.no_acls else args.acl_default_policy
    mesh.s = dataclasses.replace(mesh.s, acl_default_policy=policy)
    mesh.up()
    print("local mesh is up")
    if mesh.acls_on():
        print(f"ACL management token: export LOOM_HTTP_TOKEN_FILE={mesh.s.token_file}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from loom.local.workload import parse_annotations

    mesh = mesh_from_env()
    rec = mesh.run(
        args.name,
        _ports(args.port),
        parse_annotations(args.annotation or []),
        list(args.rest),
        service_account=args.service_account,
    )
    print(f"pod {args.name} is running at {rec['ip']}")
    return 0


def _exec(args: argparse.Namespace) -> int:
    import subprocess

    cmd = list(args.rest)
    if not cmd:
        from loom.local.workload import WorkloadError

        raise WorkloadError("exec: give a command after --")
    argv = mesh_from_env(say=False).exec_argv(args.name, cmd)
    return subprocess.run(argv).returncode


def _ps(args: argparse.Namespace) -> int:
    rows = mesh_from_env(say=False).ps()
    print(f"{'NAME':<16} {'IP':<15} {'APP':<8} {'SIDECARS':<9} SERVICES")
    for r in rows:
        services = ",".join(r["services"])
        print(f"{r['name']:<16} {r['ip']:<15} {r['app']:<8} {r['sidecars']:<9} {services}")
    return 0


def _logs(args: argparse.Namespace) -> int:
    from loom.local.mesh import LocalError

    mesh = mesh_from_env(say=False)
    rec = mesh.record(args.name)
    if rec is None:
        raise LocalError(f"no pod named {args.name!r} (see: loom local ps)")
    paths = [Path(s["log"]) for s in rec.get("sidecars", [])] if args.sidecar else []
    if not args.sidecar and rec.get("app"):
        paths = [Path(rec["app"]["log"])]
    for path in paths:
        if len(paths) > 1:
            print(f"==> {path.name} <==")
        sys.stdout.write(path.read_text(errors="replace") if path.exists() else "")
    return 0


def _rm(args: argparse.Namespace) -> int:
    mesh = mesh_from_env()
    for name in args.names:
        mesh.rm(name)
    return 0


def _down(args: argparse.Namespace) -> int:
    mesh_from_env().down(purge=args.purge)
    print("local mesh is down")
    return 0


def register(commands: Commands) -> None:
    local = commands.group(
        "local",
        "a mesh on this machine: network namespaces as pods, real Envoy sidecars (needs root)",
    )
    p = local.add_parser(
        "up",
        help="start the local server and node network",
        description=(
            "Start the local server (ACLs on, default deny: a management token is made at the "
            "first up, kept 0600 in the state directory, and pods log in with JWTs the mesh "
            "signs) and the node network."
        ),
    )
    acls = p.add_mutually_exclusive_group()
    acls.add_argument(
        "--acl-default-policy", choices=("allow", "deny"), default="deny",
        help="the ACL default policy (default deny; intentions default to the same)",
    )  # fmt: skip
    acls.add_argument(
        "--no-acls", action="store_true", help="ACLs off, intentions default allow (the old mesh)"
    )
    p.set_defaults(func=_up)
    p = local.add_parser(
        "run",
        help="run a workload in a new pod with its sidecar(s)",
        description=(
            "Create pod NAME: a network namespace on the local bridge, its services registered, "
            "transparent proxy rules applied (unless transparent-proxy=false), its sidecar(s) "
            "running Envoy as the proxy UID, then CMD. Annotations are the Kubernetes ones "
            "(consul.hashicorp.com/...; the prefix may be left out) and mean the same here."
        ),
    )
    p.add_argument("name", help="pod name; also the default service name")
    p.add_argument("--port", action="append", help="the app's port(s), repeatable or comma list")
    p.add_argument(
        "--annotation", "-a", action="append", metavar="KEY=VALUE",
        help="a pod annotation, e.g. connect-service-upstreams=web:1234",
    )  # fmt: skip
    p.add_argument(
        "--service-account", metavar="NAME",
        help="the pod's service account (default: each service's name); with ACLs on a "
        "service whose account is named otherwise is refused, as on Kubernetes",
    )  # fmt: skip
    p.set_defaults(func=_run, takes_rest=True)
    p.epilog = (
        "Give the app after --, e.g.: loom local run web --port 8080 -- python3 -m http.server 8080"
    )
    p = local.add_parser("exec", help="run a command inside a pod (like kubectl exec)")
    p.add_argument("name", help="the pod to run the command in")
    p.set_defaults(func=_exec, takes_rest=True)
    p.epilog = "Give the command after --, e.g.: loom local exec web -- curl -s http://db/"
    p = local.add_parser("ps", help="list pods")
    p.set_defaults(func=_ps)
    p = local.add_parser("logs", help="print a pod's app (or --sidecar) log")
    p.add_argument("name", help="the pod whose log to print")
    p.add_argument("--sidecar", action="store_true", help="the sidecar logs instead")
    p.set_defaults(func=_logs)
    p = local.add_parser("rm", help="remove pods: processes, registrations, namespaces")
    p.add_argument("names", nargs="+", help="the pods to remove")
    p.set_defaults(func=_rm)
    p = local.add_parser("down", help="remove every pod, the local server and the node network")
    p.add_argument("--purge", action="store_true", help="also delete the local server's data")
    p.set_defaults(func=_down)
