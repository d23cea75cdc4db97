"""Losing dc2's mesh gateway and getting it back, with real Envoy on loopback (issue 15).

The two datacenters of ``test_cross_dc_upstream`` (dc1 primary, dc2 joined over the WAN, a
gateway in each, dc1's client with the upstream ``api`` in dc2). With dc2's gateway stopped,
dc1's cross-DC calls fail, and the Envoy that dials it says why: its cluster towards dc2
counts failed connects (the client's own in mode ``remote``, dc1's gateway's in mode
``local``). Once the gateway is started again on the same address, the calls work again.
Every wait is bounded and on an event (an answer, a counter), never a fixed sleep.
"""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.e2e.test_cross_dc_upstream import CrossDc, build
from tests.support.mesh import connects, curl, envoy_admin, wait_for

pytestmark = pytest.mark.envoy


@pytest.fixture(scope="module")
def dcs(tmp_path_factory: pytest.TempPathFactory) -> Iterator[CrossDc]:
    d = build(tmp_path_factory.mktemp("gateway-loss"))
    try:
        yield d
    finally:
        d.close()


def connect_fails(work: Path, cluster: str) -> int:
    """The ``upstream_cx_connect_fail`` counter of one cluster in this Envoy."""
    key = f"cluster.{cluster}.upstream_cx_connect_fail: "
    stats = envoy_admin(work, f"/stats?filter={cluster}")
    line = next((s for s in stats.splitlines() if s.startswith(key)), key + "0")
    return int(line.removeprefix(key))


@pytest.mark.parametrize("mode", ["remote", "local"])
def test_dc1s_calls_fail_while_dc2s_gateway_is_gone_and_work_once_it_is_back(
    dcs: CrossDc, mode: str
) -> None:
    dcs.mode(mode)
    want = {"local": dcs.gw1, "remote": dcs.gw2}[mode]
    wait_for(lambda: dcs.cluster_ports() == {want}, 60, f"the client's cluster in mode {mode}")
    wait_for(lambda: dcs.answer() == "hello from dc2", 60, "api in dc2 before the loss")
    # The Envoy that dials dc2's gateway: the client's sidecar, or dc1's gateway.
    if mode == "remote":
        assert dcs.client.work is not None
        dialler, cluster = dcs.client.work, dcs.sni("api", "dc2")
    else:
        dialler, cluster = dcs.tmp / "gateway-dc1", f"dc2.internal.{dcs.td}"
    before = connect_fails(dialler, cluster)

    dcs.gateway2.stop()
    try:
        wait_for(lambda: not connects(dcs.gw2), 30, "dc2's gateway port closed")
        rc, out = curl(f"http://127.0.0.1:{dcs.upstream}/")
        assert rc != 0 and "hello from dc2" not in out, (rc, out)
        wait_for(lambda: connect_fails(dialler, cluster) > before, 30,
                 f"failed connects to dc2's gateway counted by {dialler.name}")  # fmt: skip
        # dc1 itself unaffected (the loss is pushed to the client's Envoy meanwhile: under load
        # one call may meet that update, so a few tries, bounded).
        wait_for(lambda: dcs.answer(dcs.local_upstream) == "hello from dc1", 10, "dc1's api")
    finally:  # the next case needs dc2's gateway whatever happened here
        dcs.gateway2 = dcs.start_gateway2()
    wait_for(lambda: dcs.answer() == "hello from dc2", 90, "api in dc2 after the gateway is back")
    assert {dcs.answer() for _ in range(5)} == {"hello from dc2"}
