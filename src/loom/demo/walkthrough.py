"""``loom demo``: the seeds' examples, live, on this machine, explained step by step.

As root: a local mesh (``loom local``, ACLs on with default allow, as seed 000 assumes) with
network namespaces as pods, transparent proxy and the DNS proxy, fed the project's
``examples/`` manifests (which stand for the seed's YAML) with ``loom local apply -f``:
static-server and static-client, ``get pod -o yaml`` showing ``connect-inject-status:
injected``, ``exec deploy/static-client -- curl --silent http://static-server/`` ->
``"hello world"``, a deny ServiceIntentions (curl exits 52) and its deletion, a pod whose
service account is not its service's name refused (``403``, ``Permission denied``), the
multi-port web/web-admin pod and the client's rolled template with upstreams 1234/2234. Every
step runs the real CLI command it shows. Without root: the explicit-upstream parts on
loopback (ACLs on too, a token per sidecar), and it says what it skipped. Each expectation
is checked; the demo fails (exit 1) if one does not hold, and it always cleans up.
"""

from __future__ import annotations

import json
import os
import shlex
import shutil
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Sequence
from pathlib import Path

import yaml

from loom.errors import LoomError
from loom.local import processes


class DemoFailed(LoomError):
    """An expectation of the walkthrough did not hold."""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Walkthrough:
    def __init__(self, env: dict[str, str]) -> None:
        self.env = {**os.environ, **env}
        self.step_no = 0
        self.loom = [sys.executable, "-m", "loom"]

    def step(self, title: str, *explain: str) -> None:
        self.step_no += 1
        print(f"\n==> Step {self.step_no}: {title}")
        for line in explain:
            print(f"    {line}")
        sys.stdout.flush()

    def run(
        self, shown: str, argv: Sequence[str], check: bool = True, quiet: bool = False
    ) -> subprocess.CompletedProcess[str]:
        print(f"    $ {shown}")
        sys.stdout.flush()
        out = subprocess.run(list(argv), capture_output=True, text=True, env=self.env, timeout=120)
        for line in ("" if quiet else out.stdout + out.stderr).rstrip().splitlines():
            print(f"      {line}")
        if out.returncode != 0:
            print(f"      command terminated with exit code {out.returncode}")
        if check and out.returncode != 0:
            raise DemoFailed(f"step {self.step_no}: `{shown}` failed")
        sys.stdout.flush()
        return out

    def loom_cmd(self, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
        shown = "loom " + shlex.join(args)
        shown = shown.replace(shlex.join(self.loom), "loom")  # the app commands run loom too
        return self.run(shown, [*self.loom, *args], check=check)

    def expect(self, out: subprocess.CompletedProcess[str], code: int, text: str | None) -> None:
        if out.returncode != code or (text is not None and out.stdout.strip() != text):
            raise DemoFailed(
                f"step {self.step_no}: expected exit {code}"
                + (f" and {text!r}" if text is not None else "")
                + f", got exit {out.returncode} and {out.stdout.strip()!r}"
            )
        print(f"    ok: {'exit code ' + str(code) if text is None else repr(text)}")

    def retry_curl(
        self, via: list[str], url: str, code: int, text: str | None, max_time: int = 5
    ) -> None:
        """Run ``curl`` (inside a pod when ``via`` is ``loom local exec POD --``) until it gives
        the expected result or 5 s pass: intentions apply in milliseconds, but a loaded
        machine deserves slack. Shows the command and its output, then checks."""
        curl = ["curl", "--silent", "--max-time", str(max_time), url]
        argv = [*self.loom, *via[1:], *curl] if via else curl
        deadline = time.monotonic() + 5
        while True:
            out = subprocess.run(argv, capture_output=True, text=True, env=self.env, timeout=60)
            good = out.returncode == code and (text is None or out.stdout.strip() == text)
            if good or time.monotonic() > deadline:
                break
            time.sleep(0.2)
        print(f"    $ {shlex.join([*via, 'curl', '--silent', url])}")
        if out.stdout.strip():
            print(f"      {out.stdout.strip()}")
        if out.returncode:
            print(f"      command terminated with exit code {out.returncode}")
        self.expect(out, code, text)


def examples_dir() -> Path:
    """The project's examples folder (``LOOM_EXAMPLES_DIR`` overrides, for installed copies)."""
    given = os.environ.get("LOOM_EXAMPLES_DIR")
    path = Path(given) if given else Path(__file__).resolve().parents[3] / "examples"
    if not (path / "static-server.yaml").is_file():
        raise DemoFailed(f"the example manifests are not in {path} (set LOOM_EXAMPLES_DIR)")
    return path


def local_demo() -> None:
    examples = examples_dir()
    state = Path(
        tempfile.mkdtemp(prefix="loom-demo-", dir="/run" if os.path.isdir("/run") else None)
    )
    env = {
        "LOOM_LOCAL_PREFIX": "ldemo",
        "LOOM_LOCAL_STATE_DIR": str(state),
        "LOOM_LOCAL_SUBNET": "10.247.0.0/16",
        "LOOM_LOCAL_DATA_DIR": "-",
        "LOOM_LOCAL_HTTP_ADDR": f"127.0.0.1:{free_port()}",
        "LOOM_LOCAL_GRPC_ADDR": f"127.0.0.1:{free_port()}",
    }
    env["LOOM_HTTP_ADDR"] = env["LOOM_LOCAL_HTTP_ADDR"]
    env["LOOM_HTTP_TOKEN_FILE"] = str(state / "management.token")  # what `up` prints
    w = Walkthrough(env)
    client = ["loom", "local", "exec", "deploy/static-client", "--"]

    def example(name: str) -> str:
        path = os.path.relpath(examples / name)  # shown as the reader would type it
        return path if not path.startswith("..") else str(examples / name)

    try:
        w.step(
            "a local mesh",
            "Network namespaces play the pods, on a bridge inside a private node namespace.",
            "A Loom server (catalog, intentions, CA, xDS) runs on this machine; sidecars reach",
            "it over unix sockets. Nothing outside the namespaces this demo makes is touched.",
            "ACLs are on with default policy allow (seed 000: 'when ACLs default policy is",
            "allow, Consul will automatically configure proxies with all upstreams'): each pod",
            "logs in with a service-account JWT the mesh signs, its sidecar holds only its own",
            "service's token.",
        )
        w.loom_cmd("local", "up", "--acl-default-policy", "allow")
        w.step(
            "static-server (seed 000: 'Example'), the seed's YAML applied as it is",
            "examples/static-server.yaml: a Service, a ServiceAccount and a Deployment whose pod",
            "template asks for injection. The pod goes through the injector the webhook uses;",
            "its http-echo container runs Loom's http-echo, its sidecar Envoy as a UID of the",
            "pod's own, and iptables sends all its traffic through the sidecar (transparent",
            "proxy).",
        )
        w.loom_cmd("local", "apply", "-f", example("static-server.yaml"))
        w.step(
            "static-client (seed 000: 'Connecting to Mesh-Enabled Services')",
            "Its curl image is the host's curl; it idles so that we can exec into it.",
        )
        w.loom_cmd("local", "apply", "-f", example("static-client.yaml"))
        w.loom_cmd("local", "get", "pods")
        w.step(
            "verify the injection (seed 000: 'Verifying the Installation')",
            "kubectl get pod static-server --output yaml shows connect-inject-status: injected",
            "(here the lines that matter of the full injected pod).",
        )
        out = w.run("loom local get pod deploy/static-server -o yaml | grep connect-inject-status",
                    [*w.loom, "local", "get", "pod", "deploy/static-server", "-o", "yaml"],
                    quiet=True)  # fmt: skip
        shown = [line for line in out.stdout.splitlines() if "connect-inject-status" in line]
        for line in shown:
            print(f"      {line}")
        spec = (yaml.safe_load(out.stdout) or {}).get("spec") or {}
        for field in ("initContainers", "containers"):
            names = ", ".join(c["name"] for c in spec.get(field) or [])
            print(f"    {field}: {names}")
        if "    consul.hashicorp.com/connect-inject-status: injected" not in shown:
            raise DemoFailed(f"step {w.step_no}: the pod is not marked injected")
        print("    ok: connect-inject-status: injected")
        w.step(
            "kubectl exec deploy/static-client -- curl --silent http://static-server/",
            "Transparent proxy: the client uses the Kubernetes name, its sidecar's DNS proxy",
            "answers it and both sidecars carry the request over mTLS.",
        )
        w.retry_curl(client, "http://static-server/", 0, '"hello world"')
        w.step(
            "deny static-client -> static-server with an intention",
            "examples/deny-static-client.yaml is a ServiceIntentions CRD; the server's sidecar",
            "rejects the connection at once, without touching either pod.",
        )
        w.loom_cmd("local", "apply", "-f", example("deny-static-client.yaml"))
        w.retry_curl(client, "http://static-server/", 52, None)
        w.step("remove the intention: traffic flows again")
        w.loom_cmd("local", "delete", "-f", example("deny-static-client.yaml"))
        w.retry_curl(client, "http://static-server/", 0, '"hello world"')
        w.step(
            "a pod whose service account is not named like its service is refused",
            "It logs in as service account static-server (the binding rule gives it that",
            "identity), so it may not write service impostor: no token, no certificate.",
        )
        out = w.loom_cmd(
            "local", "run", "impostor", "--service-account", "static-server", "--",
            "sleep", "infinity", check=False,
        )  # fmt: skip
        said = out.stdout + out.stderr
        if out.returncode == 0 or "403" not in said or "Permission denied" not in said:
            raise DemoFailed(f"step {w.step_no}: expected a 403 Permission denied refusal")
        print("    ok: refused with 403 Permission denied")
        w.step(
            "a pod with two ports (seed 000: 'Kubernetes Pods with Multiple ports')",
            "One pod serves web on 8080 and web-admin on 9090: one service, one sidecar and",
            "one login (with the service-account-token Secret named like it) per port.",
        )
        w.loom_cmd("local", "apply", "-f", example("multi-port.yaml"))
        w.step(
            "static-client with the upstreams web:1234 and web-admin:2234",
            "A changed pod template: its pod is replaced by a new one (a rolling update).",
        )
        w.loom_cmd("local", "apply", "-f", example("static-client-multi-port.yaml"))
        w.retry_curl(client, "localhost:1234", 0, '"hello world"')
        w.retry_curl(client, "localhost:2234", 0, '"hello world from 9090"')
        print("    (the seed's prose writes the answers without the quotes; the http-echo")
        print('     image prints -text="hello world" with them, as the first curl showed)')
    finally:
        w.step("clean up: every pod, the server and the node network")
        w.loom_cmd("local", "down", check=False)
        with_state = state.exists() and any(state.iterdir())
        if state.exists() and not with_state:
            state.rmdir()


def _service_token(http: str, management: str, service: str, path: Path) -> None:
    """A token with ``service``'s identity only, in ``path`` (0600), for its sidecar."""
    from loom.api.client import Client, ClientError

    body = {"Description": f"demo sidecar of {service}",
            "ServiceIdentities": [{"ServiceName": service}]}  # fmt: skip
    try:
        token = Client(http, timeout=10, token=management).put("/v1/acl/token", body)
    except ClientError as exc:
        raise DemoFailed(f"cannot make the token of {service}: {exc}") from exc
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "w") as f:
        f.write(token["SecretID"])
    print(f"    (made a token for {service}'s sidecar: service identity {service})")


def loopback_demo(reason: str) -> None:
    print(f"Running the loopback part of the demo only: {reason}.")
    print("Skipped: network-namespace pods, transparent proxy (iptables) and DNS names.")
    tmp = Path(tempfile.mkdtemp(prefix="loom-demo-"))
    http, grpc = f"127.0.0.1:{free_port()}", f"127.0.0.1:{free_port()}"
    management = str(uuid.uuid4())
    (tmp / "management.token").write_text(management)  # mkdtemp's directory is 0700
    w = Walkthrough({"LOOM_HTTP_ADDR": http, "LOOM_GRPC_ADDR": grpc,
                     "LOOM_HTTP_TOKEN_FILE": str(tmp / "management.token")})  # fmt: skip
    pids: list[int] = []
    loom = [sys.executable, "-m", "loom"]

    def spawn(name: str, *args: str) -> None:
        pids.append(processes.spawn([*loom, *args], tmp / f"{name}.log", w.env))

    try:
        w.step(
            "a Loom server on loopback (in-memory store), ACLs on with default deny",
            "The CLI uses the management token the server was started with; each sidecar",
            "gets a token with only its own service's identity.",
        )
        acls = ["--acl-default-policy", "deny", "--acl-initial-management-token", management]
        spawn("server", "server", "--dev", "--http-addr", http, "--grpc-addr", grpc, *acls)
        deadline = time.monotonic() + 20
        while subprocess.run(
            [*loom, "catalog", "services"], capture_output=True, env=w.env
        ).returncode:
            if time.monotonic() > deadline:
                raise DemoFailed(f"the server did not start: {processes.tail(tmp / 'server.log')}")
            time.sleep(0.2)
        app, up = free_port(), free_port()
        w.step(
            "static-server and static-client with an explicit upstream",
            f"The client's sidecar listens on 127.0.0.1:{up}; it dials static-server over mTLS.",
        )
        spawn("app", "http-echo", "-text", "hello world", "-listen", f"127.0.0.1:{app}")
        for name, port, side, ups in (
            ("static-server", app, free_port(), []),
            (
                "static-client",
                free_port(),
                free_port(),
                [{"DestinationName": "static-server", "LocalBindPort": up}],
            ),
        ):
            defn = tmp / f"{name}.json"
            sidecar = {"port": side, "proxy": {"upstreams": ups}}
            body = {
                "service": {"name": name, "port": port, "connect": {"sidecar_service": sidecar}}
            }
            defn.write_text(json.dumps(body))
            w.loom_cmd("services", "register", str(defn))
            token_file = tmp / f"{name}.token"
            _service_token(http, management, name, token_file)
            spawn(
                name + "-dp",
                "dataplane",
                "--proxy-id",
                f"{name}-sidecar-proxy",
                "--http-addr",
                http,
                "--grpc-addr",
                grpc,
                "--drain-seconds",
                "0.2",
                "--token-file",
                str(token_file),
            )
        w.step(
            "allow static-client -> static-server: static-client reaches it through both sidecars",
            "With ACLs on and default deny, you must supply an intention.",
        )
        w.loom_cmd("intention", "create", "--allow", "static-client", "static-server")
        w.retry_curl([], f"http://127.0.0.1:{up}/", 0, "hello world")
        w.step("deny with an intention: curl exits 52")
        w.loom_cmd("intention", "create", "--replace", "--deny", "static-client", "static-server")
        w.retry_curl([], f"http://127.0.0.1:{up}/", 52, None)
        w.step("allow it again: traffic flows again")
        w.loom_cmd("intention", "create", "--replace", "--allow", "static-client", "static-server")
        w.retry_curl([], f"http://127.0.0.1:{up}/", 0, "hello world")
    finally:
        w.step("clean up")
        for pid in reversed(pids):
            processes.stop(pid)
        shutil.rmtree(tmp, ignore_errors=True)
        print("    stopped every process the demo started")


def demo(loopback: bool = False, datacenters: int = 1) -> int:
    from loom.local.mesh import LocalError

    print("Loom demo: the service mesh of the seeds, live on this machine.")
    reason = "--loopback was given" if loopback else None
    if reason is None and os.geteuid() != 0:
        reason = "not root (pods need network namespaces and iptables)"
    elif reason is None:
        for tool in ("ip", "iptables-restore", "setpriv", "curl"):
            if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
                reason = f"{tool} is not installed"
    if datacenters > 1 and reason is not None:
        print(f"\nDEMO FAILED: two datacenters need pods, and here: {reason}")
        return 1
    try:
        if datacenters > 1:
            from loom.demo.federation import federation_demo

            federation_demo()
        elif reason is None:
            local_demo()
        else:
            loopback_demo(reason)
    except (DemoFailed, LocalError) as exc:
        print(f"\nDEMO FAILED: {exc}")
        return 1
    except OSError as exc:
        print(f"\nDEMO FAILED: {exc.strerror or exc}: {exc.filename or ''}")
        return 1
    print("\nDemo complete: every step behaved as the seeds describe.")
    return 0
