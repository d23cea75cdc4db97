"""One UID per local pod: how a pod's sidecar UID is chosen and where it comes from."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from loom.local.errors import LocalError
from loom.local.netns import netns_exec_argv
from loom.local.uids import SOCKET_GID, UidRange, allocated, choose, claim

SMALL = UidRange(first=70000, count=4)


def nobody_known(_uid: int) -> bool:
    return False


def test_a_pod_gets_the_same_uid_each_time_it_is_made_under_its_name() -> None:
    first = choose("static-server", set(), SMALL, nobody_known)
    assert first == choose("static-server", set(), SMALL, nobody_known)
    assert SMALL.first <= first < SMALL.first + SMALL.count


def test_a_uid_another_pod_holds_or_the_system_knows_is_never_chosen() -> None:
    wanted = choose("web", set(), SMALL, nobody_known)
    other = choose("web", {wanted}, SMALL, nobody_known)
    assert other != wanted
    third = choose("web", {wanted}, SMALL, lambda uid: uid == other)
    assert third not in (wanted, other)


def test_a_full_range_is_refused_with_a_message_saying_what_to_do() -> None:
    taken = set(range(SMALL.first, SMALL.first + SMALL.count))
    with pytest.raises(LocalError, match=r"no free sidecar UID in 70000-70003.*remove a pod"):
        choose("web", taken, SMALL, nobody_known)


def test_a_range_holding_the_shared_socket_group_or_root_is_refused() -> None:
    with pytest.raises(LocalError, match="holds 5995"):
        UidRange(first=SOCKET_GID - 1, count=10)
    with pytest.raises(LocalError, match="not valid"):
        UidRange(first=0, count=10)


def test_the_default_range_avoids_login_users_and_systemds_dynamic_users() -> None:
    r = UidRange()
    assert r.first >= 60000 and r.first + r.count <= 61184


def test_the_uids_held_are_read_from_the_pods_records(tmp_path: Path) -> None:
    pods = tmp_path / "pods"
    for name, uid in (("a", 70001), ("b", None), ("c", 70003)):
        (pods / name).mkdir(parents=True)
        (pods / name / "pod.json").write_text(json.dumps({"name": name, "uid": uid}))
    (pods / "broken").mkdir()
    (pods / "broken" / "pod.json").write_text("{not json")
    assert allocated(pods) == {"a": 70001, "c": 70003}
    assert allocated(pods, but="a") == {"c": 70003}


def test_a_claim_that_cannot_be_recorded_leaves_no_pod_directory(tmp_path: Path) -> None:
    def fail(_uid: int) -> None:
        raise LocalError("disk full")

    with pytest.raises(LocalError, match="disk full"):
        claim(tmp_path / "pods", "web", SMALL, True, fail)
    assert list((tmp_path / "pods").iterdir()) == []


def test_a_sidecar_keeps_only_the_shared_group_besides_its_own() -> None:
    argv = netns_exec_argv("ns", ["envoy"], uid=60001, groups=[SOCKET_GID])
    assert argv == ["ip", "netns", "exec", "ns", "setpriv", "--reuid=60001", "--regid=60001",
                    "--groups=5995", "--", "envoy"]  # fmt: skip
    assert "--clear-groups" in netns_exec_argv("ns", ["x"], uid=60001)
