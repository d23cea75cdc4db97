"""Every HTTP route says what ACL permission it needs: none is open by omission."""

from __future__ import annotations

from loom.control.state import ServerSettings, State
from loom.server.guard import NEEDS, UNRESOLVED
from loom.server.http import build_app


def _routes() -> set[tuple[str, str]]:
    app = build_app(State(ServerSettings()))
    found = set()
    for route in app.router.routes():
        if route.method != "HEAD" and route.resource is not None:
            found.add((route.method, route.resource.canonical))
    return found


def test_every_route_of_the_api_has_an_entry_in_the_acl_table() -> None:
    missing = _routes() - set(NEEDS) - UNRESOLVED
    assert missing == set(), f"routes without an ACL rule (they would need acl:write): {missing}"


def test_the_acl_table_names_no_route_that_does_not_exist() -> None:
    assert set(NEEDS) | UNRESOLVED <= _routes()
