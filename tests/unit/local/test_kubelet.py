"""The local kubelet's probe arithmetic, as Kubernetes counts (pure)."""

from __future__ import annotations

from loom.local.kubelet import ProbeState, has_probes, health_check


def test_a_probe_holds_after_success_threshold_and_fails_after_failure_threshold() -> None:
    p = ProbeState({"successThreshold": 2, "failureThreshold": 3, "periodSeconds": 5})
    p.start(100.0)
    assert p.next_at == 100.0
    assert [p.record(True, 100.0), p.record(True, 105.0)] == [False, True]
    assert p.next_at == 110.0
    assert [p.record(False, t) for t in (110.0, 115.0)] == [True, True]
    assert p.record(True, 120.0) is True  # a success resets the failures
    assert [p.record(False, t) for t in (125.0, 130.0, 135.0)] == [True, True, False]


def test_defaults_are_kubernetes_ones_and_the_initial_delay_is_kept() -> None:
    p = ProbeState({"initialDelaySeconds": 7})
    p.start(0.0)
    assert (p.next_at, p.period) == (7.0, 10.0)
    assert p.record(True, 7.0) is True
    assert p.next_at == 17.0


def test_only_app_containers_probes_count_and_the_check_starts_critical() -> None:
    pod = {"spec": {"containers": [
        {"name": "app"}, {"name": "loom-dataplane", "readinessProbe": {"tcpSocket": {}}}]}}  # fmt: skip
    assert not has_probes(pod, {"app"})
    pod["spec"]["containers"][0]["livenessProbe"] = {"tcpSocket": {"port": 1}}
    assert has_probes(pod, {"app"})
    check = health_check("web-1-web")
    assert (check["CheckID"], check["Status"]) == ("web-1-web-kubernetes-health-check", "critical")
