"""``loom local``: a mesh on this machine, network namespaces as pods (root required).

Every command takes ``--datacenter NAME`` (``-dc``): the mesh of that datacenter, laid out by
``loom.local.datacenters`` beside the default one (dc1); ``up --datacenter dc2
--primary-datacenter dc1`` federates the two (``loom.local.federation``).

Environment overrides (tests, several meshes side by side): ``LOOM_LOCAL_PREFIX``,
``LOOM_LOCAL_STATE_DIR``, ``LOOM_LOCAL_SUBNET``, ``LOOM_LOCAL_DATA_DIR`` (``-`` for an
in-memory store), ``LOOM_LOCAL_HTTP_ADDR``, ``LOOM_LOCAL_GRPC_ADDR``. ACLs are on (default
deny) unless ``loom local up`` is given ``--acl-default-policy allow`` or ``--no-acls``; the
other ``loom local`` commands follow what the running server was started with.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import os
import sys
from pathlib import Path
from typing import TYPE_CHECKING

from loom import defaults

if TYPE_CHECKING:
    from loom.cli import Commands
    from loom.local.apply import Applier
    from loom.local.datacenters import BaseLayout
    from loom.local.mesh import LocalMesh


def base_layout() -> BaseLayout:
    """The default datacenter's mesh as the environment gives it (``LOOM_LOCAL_*``)."""
    from loom.local.datacenters import BaseLayout

    env = os.environ
    data = env.get("LOOM_LOCAL_DATA_DIR", "/var/lib/loom/local")
    return BaseLayout(
        prefix=env.get("LOOM_LOCAL_PREFIX", "loom"),
        subnet=env.get("LOOM_LOCAL_SUBNET", "10.244.0.0/16"),
        state_dir=Path(env.get("LOOM_LOCAL_STATE_DIR", "/run/loom/local")),
        data_dir=None if data == "-" else Path(data),
        http_addr=env.get("LOOM_LOCAL_HTTP_ADDR", defaults.HTTP_ADDR),
        grpc_addr=env.get("LOOM_LOCAL_GRPC_ADDR", defaults.GRPC_ADDR),
        wan_subnet=env.get("LOOM_LOCAL_WAN_SUBNET", "10.243.0.0/24"),
    )


def mesh_from_env(say: bool = True, datacenter: str | None = None) -> LocalMesh:
    """The mesh of ``datacenter`` (default dc1: the environment's mesh as it is)."""
    from loom.local import datacenters, federation
    from loom.local.mesh import LocalMesh
    from loom.local.settings import for_datacenter

    settings = for_datacenter(base_layout(), datacenter or datacenters.DEFAULT_DATACENTER)
    settings = federation.recorded(settings)
    return LocalMesh(settings, say=(lambda m: print(m, flush=True)) if say else None)


def _mesh(args: argparse.Namespace, say: bool = True) -> LocalMesh:
    return mesh_from_env(say=say, datacenter=args.datacenter)


def _ports(text: list[str] | None) -> list[int]:
    from loom.local.workload import WorkloadError

    out = []
    for item in text or []:
        for part in item.split(","):
            if not part.strip().isdigit() or not 0 < int(part) < 65536:
                raise WorkloadError(f"--port {part!r}: expected a port number 1-65535")
            out.append(int(part))
    return out


def _kubelet(args: argparse.Namespace) -> int:
    from loom.local.kubelet import Kubelet

    Kubelet(Path(args.pod_dir), args.http_addr, Path(args.token_file)).run()
    return 0


def _up(args: argparse.Namespace) -> int:
    mesh = _mesh(args)
    policy = None if args.no_acls else args.acl_default_policy
    mesh.s = dataclasses.replace(
        mesh.s,
        acl_default_policy=policy,
        prometheus=args.prometheus,
        prometheus_addr=args.prometheus_addr,
    )
    primary = args.primary_datacenter
    if primary and primary != mesh.s.datacenter:
        from loom.local.federation import federate

        first = mesh_from_env(datacenter=primary)  # started with the same ACLs if it is not up
        first.s = dataclasses.replace(first.s, acl_default_policy=policy)
        federate(first, mesh)
        print(f"datacenter {mesh.s.datacenter} is up, a secondary of {primary}; "
              "each has its mesh gateway on the WAN")  # fmt: skip
    else:
        mesh.up()
        print("local mesh is up")
    if args.prometheus:
        print(f"Prometheus: http://{mesh.s.prometheus_addr}/ (scrapes every sidecar)")
    if mesh.acls_on():
        print(f"ACL management token: export LOOM_HTTP_TOKEN_FILE={mesh.s.token_file}")
    return 0


def _run(args: argparse.Namespace) -> int:
    from loom.local.workload import parse_annotations

    mesh = _mesh(args)
    rec = mesh.run(
        args.name,
        _ports(args.port),
        parse_annotations(args.annotation or []),
        list(args.rest),
        service_account=args.service_account,
    )
    print(f"pod {args.name} is running at {rec['ip']}")
    return 0


def _applier(args: argparse.Namespace, say: bool = False) -> Applier:
    from loom.local.apply import Applier

    return Applier(_mesh(args, say=say))


def _exec(args: argparse.Namespace) -> int:
    import subprocess

    from loom.local.kubectl import resolve_pod

    cmd = list(args.rest)
    if not cmd:
        from loom.local.workload import WorkloadError

        raise WorkloadError("exec: give a command after --")
    applier = _applier(args)
    name = resolve_pod(applier, args.name)
    rec = applier.mesh.record(name)
    env = None
    mounts: list[tuple[str, str, bool]] = []
    if rec is not None and rec.get("containers"):
        names = [c["name"] for c in rec["containers"]]
        container = args.container or names[0]
        if container not in names:
            from loom.local.errors import LocalError

            raise LocalError(f"container {container} is not valid for pod {name}")
        entry = next(c for c in rec["containers"] if c["name"] == container)
        mounts = [(m[0], m[1], bool(m[2])) for m in entry.get("mounts") or []]
        env_file = applier.mesh.s.pods_dir / name / f"env-{container}.json"
        if env_file.exists():
            env = {**os.environ, **json.loads(env_file.read_text())}
    from loom.local.volumes import mount_argv

    argv = applier.mesh.exec_argv(name, mount_argv(mounts, cmd))
    code = subprocess.run(argv, env=env).returncode
    if code:
        print(f"command terminated with exit code {code}", file=sys.stderr)
    return code


def _apply(args: argparse.Namespace) -> int:
    from loom.local.apply import image_map, read_sources

    images = image_map(args.image_map or [], args.image_map_file or [])
    objects = read_sources(args.filename)
    _applier(args, say=args.verbose).apply(objects, images)
    return 0


def _delete(args: argparse.Namespace) -> int:
    from loom.local.apply import read_sources
    from loom.local.errors import ManifestError

    applier = _applier(args, say=args.verbose)
    if args.filename:
        if args.what:
            raise ManifestError("delete: give -f FILE or pod NAME, not both")
        return 0 if applier.delete(read_sources(args.filename)) else 1
    if len(args.what) != 2 or args.what[0] not in ("pod", "pods", "po"):
        raise ManifestError("delete: expected -f FILE or pod NAME")
    applier.delete_pod(args.what[1])
    return 0


def _get(args: argparse.Namespace) -> int:
    from loom.local.kubectl import get

    return get(_applier(args), args.what, args.name, args.output, print)


def _describe(args: argparse.Namespace) -> int:
    from loom.local.errors import ManifestError
    from loom.local.kubectl import describe_pod

    if args.what not in ("pod", "pods", "po"):
        raise ManifestError(f"describe {args.what}: loom local describes pods")
    return describe_pod(_applier(args), args.name, print)


def _ps(args: argparse.Namespace) -> int:
    from loom.local.kubectl import ps_rows

    rows = ps_rows(_mesh(args, say=False))
    print(f"{'NAME':<16} {'IP':<15} {'APP':<8} {'SIDECARS':<9} SERVICES")
    for r in rows:
        services = ",".join(r["services"])
        print(f"{r['name']:<16} {r['ip']:<15} {r['app']:<8} {r['sidecars']:<9} {services}")
    return 0


def _logs(args: argparse.Namespace) -> int:
    from loom.local.kubectl import resolve_pod
    from loom.local.mesh import LocalError

    applier = _applier(args)
    name = resolve_pod(applier, args.name)
    rec = applier.mesh.record(name)
    if rec is None:
        raise LocalError(f"no pod named {name!r} (see: loom local ps)")
    sidecars = {s["proxy_id"]: Path(s["log"]) for s in rec.get("sidecars", [])}
    apps = {c["name"]: Path(c["log"]) for c in rec.get("containers") or []}
    if not apps and rec.get("app"):
        apps = {name: Path(rec["app"]["log"])}
    if args.sidecar:
        paths = list(sidecars.values())
    elif args.container is None:
        paths = list(apps.values())[:1]
    elif args.container in apps:
        paths = [apps[args.container]]
    elif args.container.startswith("loom-dataplane") and sidecars:
        service = args.container.removeprefix("loom-dataplane").removeprefix("-")
        wanted = f"{name}-{service}-sidecar-proxy" if service else None
        paths = [p for k, p in sidecars.items() if wanted in (None, k)][:1]
    else:
        raise LocalError(f"container {args.container} is not valid for pod {name}")
    for path in paths:
        if len(paths) > 1:
            print(f"==> {path.name} <==")
        sys.stdout.write(path.read_text(errors="replace") if path.exists() else "")
    sys.stdout.flush()
    if args.follow and len(paths) == 1:
        _follow(paths[0])
    return 0


def _follow(path: Path) -> None:
    """``logs -f``: what is appended to ``path``, until Ctrl-C."""
    import time

    with open(path, errors="replace") as f:
        f.seek(0, os.SEEK_END)
        while True:
            line = f.readline()
            if line:
                sys.stdout.write(line)
                sys.stdout.flush()
            else:
                time.sleep(0.2)


def _rm(args: argparse.Namespace) -> int:
    mesh = _mesh(args)
    for name in args.names:
        mesh.rm(name)
    return 0


def _down(args: argparse.Namespace) -> int:
    mesh = _mesh(args)
    mesh.down(purge=args.purge)
    print(f"datacenter {mesh.s.datacenter} is down" if args.datacenter else "local mesh is down")
    return 0


def _gateway(args: argparse.Namespace) -> int:
    from loom.local.gateway import gateway_down, gateway_up

    mesh = _mesh(args)
    if args.action == "up":
        rec = gateway_up(mesh)
        print(f"mesh gateway of {mesh.s.datacenter}: LAN {rec['ip']}, WAN {rec['wan']['ip']}")
    elif gateway_down(mesh):
        print(f"mesh gateway of {mesh.s.datacenter}: removed")
    else:
        print(f"datacenter {mesh.s.datacenter} has no mesh gateway")
    return 0


def _add_datacenter(p: argparse.ArgumentParser) -> None:
    p.add_argument(
        "--datacenter", "-dc", metavar="NAME",
        help="the datacenter whose mesh this acts on (default dc1: the mesh of one datacenter; "
        "another has its own server, node network, pods and state directory)",
    )  # fmt: skip


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
    p.add_argument(
        "--prometheus", action="store_true",
        help="also run Prometheus (Debian's prometheus) scraping every pod's sidecar; pods "
        "then serve metrics unless annotated enable-metrics=false",
    )  # fmt: skip
    p.add_argument(
        "--prometheus-addr", default="127.0.0.1:9090", metavar="HOST:PORT",
        help="where that Prometheus answers on the host (default 127.0.0.1:9090)",
    )  # fmt: skip
    _add_datacenter(p)
    p.add_argument(
        "--primary-datacenter", metavar="NAME",
        help="make this datacenter a secondary of NAME (brought up too if it is not): its "
        "server joins NAME's over loopback, both get a mesh gateway on the WAN, and "
        "proxy-defaults MeshGateway.Mode is local in both (default: a datacenter of its own)",
    )  # fmt: skip
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
    _add_datacenter(p)
    p.set_defaults(func=_run, takes_rest=True)
    p.epilog = (
        "Give the app after --, e.g.: loom local run web --port 8080 -- python3 -m http.server 8080"
    )
    p = local.add_parser("exec", help="run a command inside a pod (like kubectl exec)")
    p.add_argument("name", help="NAME, pod/NAME or deploy/NAME (its first pod)")
    p.add_argument("-c", "--container", help="the container whose environment the command gets")
    p.add_argument(
        "-i", "--stdin", action="store_true", help="accepted, as kubectl's (stdin is passed)"
    )
    p.add_argument(
        "-t", "--tty", action="store_true", help="accepted, as kubectl's (the terminal is passed)"
    )
    _add_datacenter(p)
    p.set_defaults(func=_exec, takes_rest=True)
    p.epilog = "Give the command after --, e.g.: loom local exec web -- curl -s http://db/"
    p = local.add_parser(
        "apply",
        help="run Kubernetes manifests on the local mesh (like kubectl apply -f)",
        description=(
            "Apply Kubernetes YAML or JSON (Namespace, ServiceAccount, Secret, ConfigMap, "
            "Service, Pod, Deployment, ReplicaSet, StatefulSet, ServiceIntentions, "
            "ServiceDefaults, ProxyDefaults). The whole set is checked first; each pod goes "
            "through the injector and its containers run the programs their images map to."
        ),
    )
    p.add_argument("-f", "--filename", action="append", required=True,
                   help="a file, a directory or - (stdin); repeatable")  # fmt: skip
    p.add_argument("--image-map", action="append", metavar="IMAGE=COMMAND",
                   help="run IMAGE as COMMAND (shell-quoted); repeatable")  # fmt: skip
    p.add_argument("--image-map-file", action="append", metavar="FILE",
                   help="a YAML or JSON mapping IMAGE: COMMAND")  # fmt: skip
    p.add_argument("-v", "--verbose", action="store_true", help="say what is made, step by step")
    _add_datacenter(p)
    p.set_defaults(func=_apply)
    p = local.add_parser("delete", help="remove what manifests made, or one pod")
    p.add_argument("what", nargs="*", help="pod NAME")
    p.add_argument("-f", "--filename", action="append", help="the manifests to delete")
    p.add_argument("-v", "--verbose", action="store_true", help="say what is removed")
    _add_datacenter(p)
    p.set_defaults(func=_delete)
    p = local.add_parser("get", help="list pods, services or deployments (like kubectl get)")
    p.add_argument("what", help="pods, services or deployments")
    p.add_argument("name", nargs="?", help="one of them (a pod may be given as deploy/NAME)")
    p.add_argument(
        "-o", "--output", choices=("wide", "yaml", "json"),
        help="wide: more columns; yaml or json: the objects as kubectl prints them "
        "(default: a table)",
    )  # fmt: skip
    _add_datacenter(p)
    p.set_defaults(func=_get)
    p = local.add_parser("describe", help="a pod in detail, with the injection decision")
    p.add_argument("what", help="pod")
    p.add_argument("name", help="the pod's name")
    _add_datacenter(p)
    p.set_defaults(func=_describe)
    p = local.add_parser("kubelet", help="(started by apply) run a pod's probes, in its namespace")
    p.add_argument("--pod-dir", required=True, help="the pod's state directory (its spec)")
    p.add_argument("--http-addr", required=True, help="the local server's HTTP API address")
    p.add_argument(
        "--token-file", required=True, help="the ACL token the probes' results are written with"
    )
    p.set_defaults(func=_kubelet)
    p = local.add_parser("ps", help="list pods")
    _add_datacenter(p)
    p.set_defaults(func=_ps)
    p = local.add_parser("logs", help="print a pod's app (or --sidecar) log")
    p.add_argument("name", help="NAME, pod/NAME or deploy/NAME (its first pod)")
    p.add_argument("--sidecar", action="store_true", help="the sidecar logs instead")
    p.add_argument("-c", "--container", help="a container (loom-dataplane[-SERVICE]: a sidecar)")
    p.add_argument("-f", "--follow", action="store_true", help="keep printing what is appended")
    _add_datacenter(p)
    p.set_defaults(func=_logs)
    p = local.add_parser("rm", help="remove pods: processes, registrations, namespaces")
    p.add_argument("names", nargs="+", help="the pods to remove")
    _add_datacenter(p)
    p.set_defaults(func=_rm)
    p = local.add_parser(
        "gateway",
        help="run (up) or remove (down) the datacenter's mesh gateway on the WAN",
        description=(
            "A mesh gateway pod (Kind mesh-gateway, port 8443) with its LAN address on the "
            "datacenter's node network and its WAN address on the WAN between datacenters, "
            "run by loom dataplane. up --primary-datacenter makes one in each datacenter."
        ),
    )
    p.add_argument("action", choices=("up", "down"), help="up: run it (once); down: remove it")
    _add_datacenter(p)
    p.set_defaults(func=_gateway)
    p = local.add_parser("down", help="remove every pod, the local server and the node network")
    p.add_argument("--purge", action="store_true", help="also delete the local server's data")
    _add_datacenter(p)
    p.set_defaults(func=_down)
