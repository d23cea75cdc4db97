"""``loom intention explain``'s text, golden: the explain endpoint's JSON shape
(``explanation_doc``) of real explanations on an in-memory core, formatted for a person."""

from __future__ import annotations

from loom.cli.explain import format_explanation
from loom.control.state import State
from loom.server.explain_http import explanation_doc
from loom.xds.explain import explain


async def test_explanations_read_top_to_bottom(state: State, golden) -> None:  # type: ignore[no-untyped-def]
    await state.catalog.agent_register(
        {"Name": "api", "Port": 9090, "Connect": {"SidecarService": {"Port": 21000}}}
    )
    await state.catalog.agent_register(
        {"Name": "web", "Port": 8080, "Connect": {"SidecarService": {"Port": 21001, "Proxy": {
            "Upstreams": [{"DestinationName": "api", "LocalBindPort": 9191}]}}}}
    )  # fmt: skip
    await state.catalog.agent_register({"Name": "legacy", "Port": 7000})
    await state.configs.write({"Kind": "service-defaults", "Name": "api", "Protocol": "http"})
    await state.configs.upsert_exact("web", "api", {"Permissions": [
        {"Action": "deny", "HTTP": {"PathPrefix": "/admin"}}]})  # fmt: skip
    await state.configs.upsert_exact("*", "web", {"Action": "deny"})
    view = state.snapshot()
    text = "\n".join(
        format_explanation(explanation_doc(explain(view, "default", *pair)))
        for pair in [
            ("web", "default", "api", "DELETE", "/admin/users"),
            ("web", "default", "api", "GET", "/"),
            ("web", "default", "api"),
            ("api", "default", "web"),
            ("legacy", "default", "web"),
            ("web", "default", "legacy"),
        ]
    )
    golden.check("cli/explain.txt", text)
