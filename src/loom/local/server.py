"""The local server of one datacenter of ``loom local``: started, found and stopped.

One ``loom server`` per datacenter, on loopback for the CLI and on unix sockets in the state
directory for the pods (0660, group ``uids.SOCKET_GID``). A secondary datacenter's server is
started with ``--datacenter``, ``--primary-datacenter`` and ``--join-wan`` (the primary's HTTP
API on loopback) and uses the primary's management token, which is also its replication
token: ACLs are federated, so one token manages every datacenter. The PID is recorded the
moment the server is spawned, so ``down`` finds it even if ``up`` was killed outright.
"""

from __future__ import annotations

import json
import os
import sys
import time
from collections.abc import Callable

from loom.api.client import Client, ClientError
from loom.local import acl, processes, uids
from loom.local.errors import LocalError, state_io
from loom.local.settings import LocalSettings

Say = Callable[[str], None]


def loom_argv(*args: str) -> list[str]:
    """The command line of a ``loom`` subcommand, with this interpreter."""
    return [sys.executable, "-m", "loom", *args]


def client(s: LocalSettings) -> Client:
    """A client of the local server holding the management token (when ACLs are on)."""
    return Client(f"unix:{s.http_socket}", timeout=15, token=acl.read_token(s.token_file))


def secure_state_dir(s: LocalSettings) -> None:
    """The state directory is root's, 0710, group the sidecars' shared group: the sidecars
    may reach their sockets and their own pod's directory inside, no other local user may
    enter."""
    state = s.net.state_dir
    with state_io(f"cannot secure {state}"):
        state.mkdir(parents=True, exist_ok=True)
        os.chown(state, 0, uids.SOCKET_GID)
        state.chmod(0o710)


def server_pid(s: LocalSettings) -> int | None:
    """The running local server's PID, or None."""
    try:
        pid = int(json.loads(s.server_file.read_text())["pid"])
    except (OSError, ValueError, KeyError):
        return None
    return pid if processes.alive(pid) else None


def _acl_flags(s: LocalSettings) -> list[str]:
    if s.acl_default_policy is None:
        with state_io("cannot remove the management token"):
            s.token_file.unlink(missing_ok=True)
        return []
    if s.management_token_source is not None and not s.token_file.exists():
        primary = acl.read_token(s.management_token_source)
        if primary is None:
            raise LocalError(
                f"the primary datacenter's management token {s.management_token_source} is "
                "missing: bring the primary up first (with ACLs on)"
            )
        acl.write_secret(s.token_file, primary)
    token = acl.management_token(s.token_file)
    flags = ["--acl-default-policy", s.acl_default_policy, "--acl-initial-management-token", token]
    if s.management_token_source is not None:
        flags += ["--acl-replication-token-file", str(s.token_file)]
    return flags


def _federation_flags(s: LocalSettings) -> list[str]:
    flags = ["--datacenter", s.datacenter]
    if s.primary_datacenter and s.primary_datacenter != s.datacenter:
        flags += ["--primary-datacenter", s.primary_datacenter]
    for addr in s.join_wan:
        flags += ["--join-wan", addr]
    return flags


def start(s: LocalSettings, say: Say) -> None:
    """Start the server and wait until it answers; with ACLs on, write the pods' auth method.
    A server that fails or is interrupted does not outlive this call."""
    policy = s.default_policy or ("allow" if s.acl_default_policy is None else None)
    flags = ["--default-intention-policy", policy] if policy else []
    flags += _acl_flags(s)
    if s.prometheus:  # the UI's request rates come from the mesh's Prometheus
        flags += ["--ui-metrics-provider", "prometheus",
                  "--ui-metrics-url", f"http://{s.prometheus_addr}"]  # fmt: skip
    store = ["--data-dir", str(s.data_dir)] if s.data_dir else ["--dev"]
    log = s.net.state_dir / "server.log"
    argv = loom_argv(
        "server", *store, *_federation_flags(s),
        "--http-addr", s.http_addr, "--http-addr", f"unix:{s.http_socket}",
        "--grpc-addr", s.grpc_addr, "--grpc-addr", f"unix:{s.grpc_socket}",
        # Each pod's sidecars run as a UID of their own with the shared group as a
        # supplementary one: the sockets (0660) admit the invoking user and that group.
        "--unix-socket-group", str(uids.SOCKET_GID),
        *flags,
    )  # fmt: skip
    where = f"datacenter {s.datacenter}, " if s.wan is not None or s.federated else ""
    say(f"starting the local server ({where}HTTP {s.http_addr}, log {log})")
    pid = processes.spawn(argv, log)
    try:
        with state_io("cannot record the local server"):
            s.server_file.write_text(json.dumps({"pid": pid}))
        deadline = time.monotonic() + 20
        while True:
            if not processes.alive(pid):
                raise LocalError(f"the local server exited: {processes.tail(log, 3)}")
            try:
                client(s).get("/v1/status/leader")
                break
            except ClientError:
                if time.monotonic() > deadline:
                    tail = processes.tail(log, 3)
                    raise LocalError(f"the local server did not start in time: {tail}") from None
                time.sleep(0.1)
        if s.acl_default_policy is not None:
            acl.ensure_auth_method(client(s), acl.signer(s.signing_key_file))
            say(
                f"ACLs on (default policy {s.acl_default_policy}), auth method "
                f"{acl.AUTH_METHOD} for the pods, management token in {s.token_file}"
            )
    except BaseException:
        processes.stop(pid)
        s.server_file.unlink(missing_ok=True)
        raise


def stop(s: LocalSettings) -> None:
    """Stop the recorded server (if running) and forget it."""
    pid = server_pid(s)
    if pid is not None:
        processes.stop(pid)
    s.server_file.unlink(missing_ok=True)
