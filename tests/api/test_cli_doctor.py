"""`loom doctor` against a real server, and without one: one line per check, the fix on each
failure, exit 1 when any fails."""

from __future__ import annotations

import subprocess
import sys

from loom.cli.doctor import Check, format_checks
from tests.support.mesh import free_port


def _doctor(*args: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "loom", "doctor", *args],
                          capture_output=True, text=True, timeout=90)  # fmt: skip


def test_a_healthy_server_passes_its_checks_and_the_status_follows_the_marks(loom_server) -> None:
    out = _doctor("-http-addr", loom_server.http, "-grpc-addr", loom_server.grpc)
    lines = out.stdout.splitlines()
    marks = {line.split(":")[0][2:]: line[0] for line in lines[:-1]}
    assert [marks[n] for n in ("server reachable", "store", "CA", "xDS", "clock")] == ["✔"] * 5
    assert lines[-1] == ("all checks passed" if "✘" not in marks.values() else
                         f"{list(marks.values()).count('✘')} check(s) failed")  # fmt: skip
    assert out.returncode == (1 if "✘" in marks.values() else 0), out.stdout


def test_without_a_server_the_server_checks_fail_with_their_fix_and_the_exit_is_1() -> None:
    port = free_port()
    out = _doctor("-http-addr", f"127.0.0.1:{port}", "-grpc-addr", f"127.0.0.1:{port}")
    assert out.returncode == 1
    lines = out.stdout.splitlines()
    assert lines[0].startswith(f"✘ server reachable: cannot reach the Loom server at 127.0.0.1:{port}")
    assert lines[0].endswith(" — fix: start `loom server`, or give -http-addr / CONSUL_HTTP_ADDR")
    assert lines[1:3] == ["- store: no server to ask", "- CA: no server to ask"]
    assert lines[3].startswith(f"✘ xDS: 127.0.0.1:{port}: ")


def test_the_report_shape_is_stable(golden) -> None:
    golden.check("cli/doctor.txt", format_checks([
        Check("server reachable", True, "127.0.0.1:8500 answers (leader 127.0.0.1:8300)"),
        Check("CA", False, "active root 12:ab expires 2026-12-01 (3 days)",
              "rotate the CA root (PUT /v1/connect/ca/configuration)"),
        Check("transparent proxy (iptables, netns)", None, "not root"),
    ]))  # fmt: skip


def test_an_unreachable_cluster_fails_the_kubernetes_check_with_its_fix(tmp_path) -> None:
    port = free_port()
    kubeconfig = tmp_path / "kubeconfig"
    kubeconfig.write_text(
        '{"apiVersion": "v1", "kind": "Config", "current-context": "k",'
        f' "clusters": [{{"name": "k", "cluster": {{"server": "https://127.0.0.1:{port}"}}}}],'
        ' "users": [{"name": "u", "user": {"token": "t"}}],'
        ' "contexts": [{"name": "k", "context": {"cluster": "k", "user": "u"}}]}'
    )
    out = _doctor("--kubeconfig", str(kubeconfig), "-http-addr", f"127.0.0.1:{port}",
                  "-grpc-addr", f"127.0.0.1:{port}")  # fmt: skip
    assert out.returncode == 1
    [line] = [ln for ln in out.stdout.splitlines() if "kubernetes API" in ln]
    assert line.startswith(f"✘ kubernetes API: {kubeconfig}: ")
    assert line.endswith(" — fix: give a working kubeconfig (--kubeconfig), or start the cluster")
    assert "webhook" not in out.stdout  # nothing else to ask without an API server
