"""The login rate limit on a real `loom server --acl-login-rate 2/s --acl-login-burst 3`.

The attacker tries forged JWTs as fast as it can: three are checked and refused (403), the
next is refused before any checking with 429 and a ``Retry-After``, and even a good JWT
gets the 429 while the address is over its rate; ``/v1/agent/metrics`` counts both kinds.
Another client address (127.0.0.2, on loopback) still logs in; and once the ``Retry-After``
has passed, so does the first.
"""

from __future__ import annotations

import http.client
import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import pytest

from tests.api.test_acl_login import METHOD, ROOT, Site, _claims, _signer
from tests.support.server import acl_server


@pytest.fixture
def site() -> Iterator[Site]:
    with acl_server(ROOT, "--acl-login-rate", "2/s", "--acl-login-burst", "3") as server:
        yield Site(server)


def _login(site: Site, jwt: str, source: str = "127.0.0.1") -> tuple[int, str, dict[str, str]]:
    conn = http.client.HTTPConnection(site.host, site.port, timeout=10,
                                      source_address=(source, 0))  # fmt: skip
    try:
        conn.request("POST", "/v1/acl/login",
                     json.dumps({"AuthMethod": METHOD, "BearerToken": jwt}))  # fmt: skip
        resp = conn.getresponse()
        return resp.status, resp.read().decode(), dict(resp.getheaders())
    finally:
        conn.close()


def _gauges(site: Site) -> dict[str, Any]:
    status, body, _ = site.call("GET", "/v1/agent/metrics", token=ROOT)
    assert status == 200
    return {g["Name"]: g["Value"] for g in body["Gauges"]}


def test_a_brute_force_of_jwts_is_slowed_to_the_rate_and_counted(site: Site) -> None:
    forged = _signer().sign(_claims("web"))  # signed by a key the method does not trust
    statuses = [_login(site, forged)[0] for _ in range(3)]
    assert statuses == [403, 403, 403]
    status, text, headers = _login(site, forged)
    assert status == 429 and "Too many login attempts" in text
    assert int(headers["Retry-After"]) >= 1
    good = site.signer.sign(_claims("web"))
    assert _login(site, good)[0] == 429  # over the rate: not even checked
    gauges = _gauges(site)
    assert gauges["loom.acl.login.failed"] == 3
    assert gauges["loom.acl.login.rate_limited"] == 2
    assert site.login_tokens() == []
    status, text, _ = _login(site, good, source="127.0.0.2")  # another address
    assert status == 200, text
    time.sleep(int(headers["Retry-After"]))  # what the server said to wait
    status, text, _ = _login(site, good)
    assert status == 200, text
    assert len(site.login_tokens()) == 2


def test_a_bad_rate_flag_stops_the_server_with_a_usage_error() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "loom", "server", "--dev", "--acl-default-policy", "deny",
         "--acl-login-rate", "3/h"],
        capture_output=True, text=True, timeout=30,
    )  # fmt: skip
    assert out.returncode != 0 and "--acl-login-rate" in out.stderr and "/s or /m" in out.stderr
