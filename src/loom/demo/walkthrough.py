"""``loom demo``: the seeds' examples, live, on this machine, explained step by step.

As root: a local mesh (``loom local``, ACLs on with default deny) with network namespaces as
pods, transparent proxy and the DNS proxy: static-server and static-client, the allow
intention default deny needs, ``curl http://static-server/``, a deny intention (curl exits
52), a pod whose service account is not its service's name refused (``403``, ``Permission
denied``), the multi-port web/web-admin pod. Every step runs the real CLI
command it shows. Without root: the explicit-upstream parts on loopback (ACLs on too, a
token per sidecar), and it says what it skipped. Each expectation is checked; the demo fails
(exit 1) if one does not hold, and it always cleans up.
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

from loom.errors import LoomError
from loom.local import processes


class DemoFailed(LoomError):
    """An expectation of the walkthrough did not hold."""


def _free_port() -> int:
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
        self, shown: str, argv: Sequence[str], check: bool = True
    ) -> subprocess.CompletedProcess[str]:
        print(f"    $ {shown}")
        sys.stdout.flush()
        out = subprocess.run(list(argv), capture_output=True, text=True, env=self.env, timeout=120)
        for line in (out.stdout + out.stderr).rstrip().splitlines():
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


def local_demo() -> None:
    state = Path(
        tempfile.mkdtemp(prefix="loom-demo-", dir="/run" if os.path.isdir("/run") else None)
    )
    env = {
        "LOOM_LOCAL_PREFIX": "ldemo",
        "LOOM_LOCAL_STATE_DIR": str(state),
        "LOOM_LOCAL_SUBNET": "10.247.0.0/16",
        "LOOM_LOCAL_DATA_DIR": "-",
        "LOOM_LOCAL_HTTP_ADDR": f"127.0.0.1:{_free_port()}",
        "LOOM_LOCAL_GRPC_ADDR": f"127.0.0.1:{_free_port()}",
    }
    env["LOOM_HTTP_ADDR"] = env["LOOM_LOCAL_HTTP_ADDR"]
    env["LOOM_HTTP_TOKEN_FILE"] = str(state / "management.token")  # what `up` prints
    w = Walkthrough(env)
    echo = [sys.executable, "-m", "loom", "http-echo"]
    try:
        w.step(
            "a local mesh",
            "Network namespaces play the pods, on a bridge inside a private node namespace.",
            "A Loom server (catalog, intentions, CA, xDS) runs on this machine; sidecars reach",
            "it over unix sockets. Nothing outside the namespaces this demo makes is touched.",
            "ACLs are on with default deny: the host CLI uses the management token `up` made,",
            "each pod logs in with a service-account JWT the mesh signs and its sidecar holds",
            "only its own service's token.",
        )
        w.loom_cmd("local", "up")
        w.step(
            "static-server (seed 000: 'Accepting Inbound Connections')",
            "The pod runs an http-echo app on :8080. Its sidecar (Envoy, as UID 5995) listens",
            "on 20000 with mTLS; iptables sends all inbound traffic there (transparent proxy).",
        )
        w.loom_cmd(
            "local",
            "run",
            "static-server",
            "--port",
            "8080",
            "--",
            *echo,
            "-text",
            '"hello world"',
            "-listen",
            ":8080",
        )
        w.step(
            "static-client",
            "No upstreams declared: with transparent proxy the upstreams are implied, and",
            "the sidecar's DNS proxy answers mesh names with their virtual IPs.",
        )
        w.loom_cmd("local", "run", "static-client", "--", "sleep", "infinity")
        w.loom_cmd("local", "ps")
        w.step(
            "allow static-client -> static-server with an intention",
            "With ACLs on and default deny, you must supply an intention (nothing flows without",
            "one), then reach static-server by its Kubernetes name, through both sidecars.",
        )
        w.loom_cmd("intention", "create", "--allow", "static-client", "static-server")
        w.retry_curl(
            ["loom", "local", "exec", "static-client", "--"],
            "http://static-server/",
            0,
            "hello world",
        )
        w.step(
            "deny with an intention",
            "Under default deny a denied service is not even an upstream of the client: its",
            "sidecar has no route to it and the connection goes nowhere (curl gives up after",
            "2 s, exit 28). With default allow (`loom local up --acl-default-policy allow`)",
            "the server's sidecar rejects it at once instead (exit 52), as in the seed.",
        )
        w.loom_cmd("intention", "create", "--replace", "--deny", "static-client", "static-server")
        w.retry_curl(
            ["loom", "local", "exec", "static-client", "--"],
            "http://static-server/",
            28,
            None,
            max_time=2,
        )
        w.step("allow it again: traffic flows again")
        w.loom_cmd("intention", "create", "--replace", "--allow", "static-client", "static-server")
        w.retry_curl(
            ["loom", "local", "exec", "static-client", "--"],
            "http://static-server/",
            0,
            "hello world",
        )
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
            "One pod serves web on 8080 and web-admin on 9090: one service and one sidecar",
            "per port. Transparent proxy is off for multi-port pods, as in Consul.",
        )
        web = shlex.join([*echo, "-text", "hello world", "-listen", ":8080"])
        admin = shlex.join([*echo, "-text", "hello world from 9090", "-listen", ":9090"])
        both = f"{web} & exec {admin}"
        w.loom_cmd(
            "local",
            "run",
            "web",
            "--port",
            "8080,9090",
            "-a",
            "transparent-proxy=false",
            "-a",
            "connect-service=web,web-admin",
            "-a",
            "connect-service-port=8080,9090",
            "--",
            "sh",
            "-c",
            both,
        )
        w.step(
            "a client with explicit upstreams web:1234 and web-admin:2234",
            "Each port is its own service with its own identity and intention.",
        )
        w.loom_cmd("intention", "create", "--allow", "static-client", "web")
        w.loom_cmd("intention", "create", "--allow", "static-client", "web-admin")
        w.loom_cmd("local", "rm", "static-client")
        w.loom_cmd(
            "local",
            "run",
            "static-client",
            "-a",
            "connect-service-upstreams=web:1234,web-admin:2234",
            "--",
            "sleep",
            "infinity",
        )
        w.retry_curl(
            ["loom", "local", "exec", "static-client", "--"],
            "http://localhost:1234",
            0,
            "hello world",
        )
        w.retry_curl(
            ["loom", "local", "exec", "static-client", "--"],
            "http://localhost:2234",
            0,
            "hello world from 9090",
        )
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
    http, grpc = f"127.0.0.1:{_free_port()}", f"127.0.0.1:{_free_port()}"
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
        app, up = _free_port(), _free_port()
        w.step(
            "static-server and static-client with an explicit upstream",
            f"The client's sidecar listens on 127.0.0.1:{up}; it dials static-server over mTLS.",
        )
        spawn("app", "http-echo", "-text", "hello world", "-listen", f"127.0.0.1:{app}")
        for name, port, side, ups in (
            ("static-server", app, _free_port(), []),
            (
                "static-client",
                _free_port(),
                _free_port(),
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


def demo(loopback: bool = False) -> int:
    from loom.local.mesh import LocalError

    print("Loom demo: the service mesh of the seeds, live on this machine.")
    reason = "--loopback was given" if loopback else None
    if reason is None and os.geteuid() != 0:
        reason = "not root (pods need network namespaces and iptables)"
    elif reason is None:
        for tool in ("ip", "iptables-restore", "setpriv", "curl"):
            if subprocess.run(["sh", "-c", f"command -v {tool}"], capture_output=True).returncode:
                reason = f"{tool} is not installed"
    try:
        if reason is None:
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
