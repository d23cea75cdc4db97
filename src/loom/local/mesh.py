"""``loom local``: a service mesh on this machine, network namespaces as pods.

One local server (durable store under ``data_dir``) listens on loopback for the CLI and on
unix sockets for the pods (the pods have no route to the host; a socket crosses namespaces);
the sockets are 0660, of the invoking user and the sidecars' shared group (``uids.SOCKET_GID``),
so other local users cannot reach the server through them.
``run`` makes a pod in this order, undoing everything if a step fails: plan (the injector's
planner) -> the pod's own sidecar UID (``uids.py``) -> namespace -> registrations -> iptables
redirection excluding that UID -> sidecar(s) as that UID, ready -> the app. Everything lives
under the state directory and the prefix of the network settings, so ``down`` removes exactly
what was made. ACLs are on (default deny) unless
``acl_default_policy`` is None: the host's management token, the pods' JWTs and their logins
are ``acl.py``'s; each sidecar holds only its own service's login token. Every failure is a
``LocalError`` (``errors.py``): the API client's, the redirect's and the system's errors are
wrapped here.
"""

from __future__ import annotations

import contextlib
import dataclasses
import json
import os
import shutil
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

from loom.api.client import Client, ClientError, NotFoundError
from loom.inject import WorkloadPlan
from loom.inject.metrics import MetricsPlan, dataplane_args
from loom.inject.registration import service_registrations
from loom.local import acl, kubelet, nodedns, processes, prometheus, server, uids, wan
from loom.local.errors import LocalError as LocalError  # re-exported for the CLI and demo
from loom.local.errors import LocalRedirectError, LocalServerError, state_io
from loom.local.netns import PodNetwork, netns_exec_argv
from loom.local.server import loom_argv
from loom.local.settings import LocalSettings as LocalSettings  # re-exported
from loom.local.volumes import mount_argv
from loom.local.workload import AppProcess, plan_local, resolv_conf
from loom.redirect import RedirectError
from loom.redirect.applying import apply_redirect

Say = Callable[[str], None]


class LocalMesh:
    def __init__(self, settings: LocalSettings | None = None, say: Say | None = None) -> None:
        self.s = settings or LocalSettings()
        self.say: Say = say or (lambda _: None)
        self.pods = PodNetwork(self.s.net)
        self.s = prometheus.scraped_settings(self.s)

    # -- server ------------------------------------------------------------------------------

    def client(self) -> Client:
        """A client of the local server holding the management token (when ACLs are on)."""
        return server.client(self.s)

    def acls_on(self) -> bool:
        """Whether the running local server has ACLs on (its ``up`` made the token file)."""
        return self.s.token_file.exists()

    def _server_pid(self) -> int | None:
        return server.server_pid(self.s)

    def up(self) -> None:
        """Start the local server (once) and the node network.

        All or nothing: when any step fails or is interrupted (Ctrl-C), what this call made
        (the server, dnsmasq, the node namespace) is undone before the error goes on. Each
        process is recorded the moment it is spawned, so ``down`` finds it even if this
        process is killed outright.
        """
        if os.geteuid() != 0:
            raise LocalError("loom local needs root (network namespaces, iptables); run with sudo")
        server.secure_state_dir(self.s)
        made_node = not self.pods.node.exists()
        had_dns = self._dns_pid() is not None
        had_prom = prometheus.enabled(self.s)
        try:
            self.pods.node.create()
            self._start_node_dns()
            if self._server_pid() is None:
                server.start(self.s, self.say)
            if self.s.prometheus:
                prometheus.start(self.s, self._records())
                self.s = prometheus.scraped_settings(self.s)
                self.say(f"Prometheus on http://{self.s.prometheus_addr}, scraping the sidecars")
        except BaseException:
            if not had_prom:
                with contextlib.suppress(Exception):
                    prometheus.stop(self.s)
            self._undo_up(made_node, had_dns)
            raise

    def _undo_up(self, made_node: bool, had_dns: bool) -> None:
        with contextlib.suppress(Exception):
            if not had_dns:
                self._stop_node_dns()
            if made_node and not self.names():
                self.pods.node.destroy()

    # -- the node's DNS server (the local kube-dns; nodedns.py) ------------------------------

    def _dns_pid(self) -> int | None:
        return nodedns.dns_pid(self.s)

    def _start_node_dns(self) -> None:
        nodedns.start(self.s)

    def _stop_node_dns(self) -> None:
        nodedns.stop(self.s)

    def add_host(self, name: str, address: str) -> None:
        """Let pods resolve ``name`` to ``address`` through the node's DNS server."""
        nodedns.add_host(self.s, name, address)

    def stop_server(self) -> None:
        server.stop(self.s)

    # -- pods ------------------------------------------------------------------------------

    def pod_dir(self, name: str) -> Path:
        return self.s.pods_dir / name

    def record(self, name: str) -> dict[str, Any] | None:
        try:
            data: dict[str, Any] = json.loads((self.pod_dir(name) / "pod.json").read_text())
        except (OSError, ValueError):
            return None
        return data

    def save(self, rec: dict[str, Any]) -> None:
        path = self.pod_dir(rec["name"]) / "pod.json"
        tmp = path.with_suffix(".tmp")
        with state_io(f"cannot record pod {rec['name']}"):
            tmp.write_text(json.dumps(rec, indent=1))
            tmp.replace(path)

    def run(
        self,
        name: str,
        ports: Sequence[int],
        annotations: dict[str, str],
        cmd: Sequence[str],
        service_account: str | None = None,
    ) -> dict[str, Any]:
        """Make pod ``name``; with ACLs on, each of its services logs in with a JWT of
        ``service_account`` (default: the service's own name), as a Kubernetes pod would."""
        plan = plan_local(name, ports, annotations, self.s.inject)  # refusals before any change
        apps = [AppProcess(None, tuple(cmd))] if cmd else []
        return self.run_pod(name, plan, apps, service_account=service_account)

    def run_pod(
        self,
        name: str,
        plan: WorkloadPlan | None,
        apps: Sequence[AppProcess],
        service_account: str | None = None,
        namespace: str = "default",
        extra: dict[str, Any] | None = None,
        accounts: Mapping[str, str] | None = None,
        probed: bool = False,
        files: Mapping[str, tuple[str, int] | None] | None = None,
    ) -> dict[str, Any]:
        """Make pod ``name`` as planned (None: not injected, no sidecar): namespace ->
        registrations -> redirection -> sidecar(s), ready -> the apps. ``loom local run``
        and ``loom local apply`` both come here. ``extra`` is kept in the pod's record; with
        ACLs on a service logs in as ``accounts[service]``, else ``service_account``, else
        its own name. A ``probed`` pod's services carry the Kubernetes Health Check
        (critical until its readiness probes pass) and a kubelet runs its probes. ``files``
        (path under the pod's directory -> text and mode, or None for a directory) are made
        before anything runs."""
        self.up()
        if self.record(name) is not None or self.pods.get_pod(name) is not None:
            raise LocalError(f"pod {name!r} exists; remove it first with: loom local rm {name}")
        pod_dir = self.pod_dir(name)
        rec: dict[str, Any] = {
            "name": name, "services": [], "sidecars": [], "app": None, "tokens": {},
            "containers": [], "created": time.time(), "uid": None, **(extra or {}),
        }  # fmt: skip
        uid = uids.claim(self.s.pods_dir, name, self.s.sidecar_uids, plan is not None,
                         lambda uid: self.save({**rec, "uid": uid or None}))  # fmt: skip
        rec["uid"] = uid or None  # None: no sidecar, no UID of its own
        if plan is not None and plan.redirect is not None:  # the rules name this pod's UID
            redirect = dataclasses.replace(plan.redirect, proxy_uid=uid)
            plan = dataclasses.replace(plan, redirect=redirect)
        try:
            with state_io(f"cannot make the files of pod {name}"):
                for rel, content in (files or {}).items():
                    path = pod_dir / rel
                    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
                    if content is None:
                        path.mkdir(exist_ok=True, mode=0o755)
                    else:
                        path.write_text(content[0])
                        path.chmod(content[1])
            dns = self.s.net.gateway if self._dns_pid() is not None else "127.0.0.1"
            info = self.pods.add_pod(name, resolv_conf(dns))
            rec.update(netns=info.netns, ip=info.ip)
            self.save(rec)
            self.say(f"pod {name}: namespace {info.netns}, address {info.ip}")
            client = self.client()
            bodies = service_registrations(plan, name, namespace, info.ip) if plan else []
            if probed:
                bodies = [{**b, "Check": kubelet.health_check(b["ID"])} for b in bodies]
            for body in bodies:
                try:
                    client.put("/v1/agent/service/register", body)
                except ClientError as exc:
                    raise LocalServerError(
                        f"pod {name}: cannot register {body['ID']}: {exc}"
                    ) from exc
                rec["services"].append(body["ID"])
                self.save(rec)
                self.say(f"pod {name}: registered service {body['Name']} (ID {body['ID']})")
                if self.acls_on():
                    account = (accounts or {}).get(body["Name"]) or service_account
                    self.login(rec, body["ID"], body["Name"], account or body["Name"])
            if plan is not None and plan.redirect is not None:
                try:
                    result = apply_redirect(plan.redirect, netns=info.netns)
                except RedirectError as exc:
                    raise LocalRedirectError(f"pod {name}: transparent proxy: {exc}") from exc
                self.say(f"pod {name}: transparent proxy: {result.summary()}")
            if plan is not None and plan.metrics is not None and rec["services"]:
                rec["metrics"] = {"target": f"{info.ip}:{plan.metrics.scrape_port}",
                                  "path": plan.metrics.scrape_path,
                                  "service": plan.services[0].name}  # fmt: skip
            for n, service_id in enumerate(rec["services"]):
                self.start_sidecar(
                    rec,
                    f"{service_id}-sidecar-proxy",
                    dns=n == 0 and plan and plan.redirect,
                    metrics=plan.metrics if plan and n == 0 else None,
                )
            if rec.get("metrics"):
                prometheus.write_targets(self.s, self._records())
            for app in apps:
                self._start_app(rec, app)
            if probed:
                self._start_kubelet(rec)
            return rec
        except BaseException:
            self.say(f"pod {name}: failed; removing what was made")
            self.teardown(rec)
            raise

    def _start_kubelet(self, rec: dict[str, Any]) -> None:
        """The pod's probes, run from inside its namespace (``kubelet.py``)."""
        pod_dir = self.pod_dir(rec["name"])
        argv = loom_argv("local", "kubelet", "--pod-dir", str(pod_dir),
                     "--http-addr", f"unix:{self.s.http_socket}",
                     "--token-file", str(self.s.token_file))  # fmt: skip
        pid = processes.spawn(netns_exec_argv(rec["netns"], argv), pod_dir / "kubelet.log")
        rec["kubelet"] = {"pid": pid}
        self.save(rec)
        self.say(f"pod {rec['name']}: kubelet runs its probes")

    def _start_app(self, rec: dict[str, Any], app: AppProcess) -> None:
        """One app process in the pod, as root; one that exits at once is an error."""
        name = rec["name"]
        log = self.pod_dir(name) / (f"{app.name}.log" if app.name else "app.log")
        env = app.env(rec["ip"]) if app.env else None
        if env is not None and app.name:
            acl.write_secret(self.pod_dir(name) / f"env-{app.name}.json", json.dumps(env))
        argv = mount_argv(app.mounts, app.argv)
        pid = processes.spawn(netns_exec_argv(rec["netns"], argv), log, env)
        entry = {"name": app.name or name, "pid": pid, "cmd": list(app.argv), "log": str(log),
                 "mounts": [list(m) for m in app.mounts]}  # fmt: skip
        rec["containers"].append(entry)
        if rec.get("app") is None:
            rec["app"] = entry
        self.save(rec)
        deadline = time.monotonic() + 1.0
        while time.monotonic() < deadline:  # an app that cannot start says so at once
            if not processes.alive(pid):
                why = processes.tail(log) or "no output"
                what = f"container {app.name}" if app.name else "the app"
                raise LocalError(f"pod {name}: {what} exited at once: {why}")
            time.sleep(0.05)
        self.say(f"pod {name}: {'container ' + app.name if app.name else 'app'} started: "
                 f"{' '.join(app.argv)}")  # fmt: skip

    def login(self, rec: dict[str, Any], service_id: str, service: str, account: str) -> None:
        """The pod's JWT for ``account``, then the login token for ``service``'s sidecar."""
        pod_dir = self.pod_dir(rec["name"])
        ident = acl.PodIdentity(
            service=service,
            service_account=account,
            jwt_file=pod_dir / f"sa-{service}.jwt",
            token_file=pod_dir / f"acl-token-{service}",
        )
        acl.mint_jwt(acl.signer(self.s.signing_key_file), account, rec["name"], ident.jwt_file)
        acl.pod_login(f"unix:{self.s.http_socket}", ident, rec["name"], rec["uid"], 15)
        rec["tokens"][service_id] = str(ident.token_file)
        self.save(rec)
        self.say(f"pod {rec['name']}: {service} logged in as service account {account}")

    def _records(self) -> list[dict[str, Any]]:
        return [r for r in map(self.record, self.names()) if r is not None]

    def start_sidecar(
        self, rec: dict[str, Any], proxy_id: str, dns: object, metrics: MetricsPlan | None = None
    ) -> None:
        work = self.pod_dir(rec["name"]) / f"dp-{proxy_id}"
        with state_io(f"cannot make the work directory of sidecar {proxy_id}"):
            work.mkdir(parents=True, exist_ok=True)
            os.chown(work, rec["uid"], rec["uid"])
            work.chmod(0o700)
        argv = loom_argv(
            "dataplane", "--proxy-id", proxy_id,
            "--http-addr", f"unix:{self.s.http_socket}",
            "--grpc-addr", f"unix:{self.s.grpc_socket}",
            "--work-dir", str(work), "--drain-seconds", "1",
            "--envoy-concurrency", str(self.s.envoy_concurrency),
        )  # fmt: skip
        if dns:
            argv += ["--dns-port", str(self.s.inject.dns.proxy_port)]
        token_file = rec.get("tokens", {}).get(proxy_id.removesuffix("-sidecar-proxy"))
        if token_file:
            argv += ["--token-file", token_file]
        if metrics is not None:  # its merged endpoint, for the mesh's Prometheus
            argv += dataplane_args(metrics)
        log = work.parent / f"{proxy_id}.log"
        as_uid = netns_exec_argv(rec["netns"], argv, uid=rec["uid"], groups=[uids.SOCKET_GID])
        pid = processes.spawn(as_uid, log)
        rec["sidecars"].append(
            {"proxy_id": proxy_id, "pid": pid, "log": str(log), "work": str(work)}
        )
        self.save(rec)
        deadline = time.monotonic() + self.s.ready_timeout_s
        while not (work / "ready").exists():
            if not processes.alive(pid):
                raise LocalError(f"sidecar {proxy_id} exited: {processes.tail(log, 3)}")
            if time.monotonic() > deadline:
                raise LocalError(f"sidecar {proxy_id} not ready in time: {processes.tail(log, 3)}")
            time.sleep(0.05)
        self.say(f"pod {rec['name']}: sidecar {proxy_id} ready (Envoy as UID {rec['uid']})")

    def teardown(self, rec: dict[str, Any]) -> None:
        """Stop, deregister, log out and remove whatever of pod ``rec`` exists."""
        if rec.get("kubelet"):  # first: it would restart containers that stop
            processes.stop(rec["kubelet"]["pid"])
        for app in rec.get("containers") or ([rec["app"]] if rec.get("app") else []):
            processes.stop(app["pid"])
        for sc in rec.get("sidecars", []):
            processes.stop(sc["pid"])
        for token_file in rec.get("tokens", {}).values():
            acl.pod_logout(f"unix:{self.s.http_socket}", Path(token_file))
        if rec.get("services"):
            try:
                client = self.client()
                for sid in rec["services"]:
                    with contextlib.suppress(NotFoundError):
                        client.put(f"/v1/agent/service/deregister/{sid}")
            except ClientError as exc:
                self.say(f"pod {rec['name']}: could not deregister its services: {exc}")
        if rec.get("wan") and self.s.wan is not None:  # a mesh gateway (``gateway.py``)
            wan.detach(self.s.wan, self.s.datacenter)
        self.pods.remove_pod(rec["name"])
        shutil.rmtree(self.pod_dir(rec["name"]), ignore_errors=True)
        if rec.get("metrics"):
            prometheus.write_targets(self.s, self._records())

    def rm(self, name: str) -> None:
        rec = self.record(name)
        if rec is None:
            if self.pods.get_pod(name) is None:
                raise LocalError(f"no pod named {name!r} (see: loom local ps)")
            rec = {"name": name}
        self.teardown(rec)
        self.say(f"pod {name}: removed")

    def names(self) -> list[str]:
        found = {p.name for p in self.pods.list_pods()}
        with state_io(f"cannot list {self.s.pods_dir}"):
            if self.s.pods_dir.is_dir():
                found |= {d.name for d in self.s.pods_dir.iterdir() if d.is_dir()}
        return sorted(found)

    def down(self, purge: bool = False) -> None:
        for name in self.names():
            self.rm(name)
        self.stop_server()
        prometheus.stop(self.s)
        self._stop_node_dns()
        state = self.s.net.state_dir
        self.pods.node.destroy()
        with state_io(f"cannot clean up {state}"):
            for sock in (self.s.http_socket, self.s.grpc_socket):
                sock.unlink(missing_ok=True)
            (state / "server.log").unlink(missing_ok=True)
            uids.lock_file(state).unlink(missing_ok=True)
            self.s.apply_file.unlink(missing_ok=True)
            (state / "federation.json").unlink(missing_ok=True)  # federation.py's record
            shutil.rmtree(self.s.pods_dir, ignore_errors=True)
            if purge or self.s.data_dir is None:  # kept with the data they are valid for
                self.s.token_file.unlink(missing_ok=True)
                self.s.signing_key_file.unlink(missing_ok=True)
            if purge and self.s.data_dir is not None:
                shutil.rmtree(self.s.data_dir, ignore_errors=True)
            if state.is_dir() and not any(state.iterdir()):
                state.rmdir()

    def exec_argv(self, name: str, cmd: Sequence[str]) -> list[str]:
        rec = self.record(name)
        if rec is None or "netns" not in rec:
            raise LocalError(f"no pod named {name!r} (see: loom local ps)")
        return netns_exec_argv(rec["netns"], cmd)
