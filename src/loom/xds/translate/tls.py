"""TLS contexts: the leaf and roots always come over SDS from the proxy's local agent.

The agent (``loom dataplane``) makes the private key, has its CSR signed and serves both
secrets to its Envoy on a unix socket (``AGENT_SDS``); the server never sends a Secret, so a
private key never crosses the network. ``secrets`` is the agent's builder of the two.
"""

from __future__ import annotations

from typing import Any

from loom.xds.translate.names import AGENT_SDS, LEAF_SECRET, ROOTS_SECRET

Doc = dict[str, Any]
TLS_PARAMS = {"tls_minimum_protocol_version": "TLSv1_2"}
_TLS = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3."


def _common(extra_validation: Doc | None = None) -> Doc:
    ctx: Doc = {
        "tls_params": TLS_PARAMS,
        "tls_certificate_sds_secret_configs": [{"name": LEAF_SECRET, "sds_config": AGENT_SDS}],
    }
    roots = {"name": ROOTS_SECRET, "sds_config": AGENT_SDS}
    if extra_validation:
        ctx["combined_validation_context"] = {
            "default_validation_context": extra_validation,
            "validation_context_sds_secret_config": roots,
        }
    else:
        ctx["validation_context_sds_secret_config"] = roots
    return ctx


def downstream_tls() -> Doc:
    """The public listener: mesh certificates only, client certificate required."""
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _TLS + "DownstreamTlsContext",
            "common_tls_context": _common(),
            "require_client_certificate": True,
        },
    }


def upstream_tls(sni: str, spiffe_id: str) -> Doc:
    """Dialing a mesh service: present our leaf, verify the peer is exactly ``spiffe_id``."""
    san = {"san_type": "URI", "matcher": {"exact": spiffe_id}}
    return {
        "name": "envoy.transport_sockets.tls",
        "typed_config": {
            "@type": _TLS + "UpstreamTlsContext",
            "sni": sni,
            "common_tls_context": _common({"match_typed_subject_alt_names": [san]}),
        },
    }


def secrets(leaf_cert_pem: str, leaf_key_pem: str, roots_pem: str) -> dict[str, Doc]:
    """The agent's two SDS secrets (never built by the server)."""
    return {
        LEAF_SECRET: {
            "name": LEAF_SECRET,
            "tls_certificate": {
                "certificate_chain": {"inline_string": leaf_cert_pem},
                "private_key": {"inline_string": leaf_key_pem},
            },
        },
        ROOTS_SECRET: {
            "name": ROOTS_SECRET,
            "validation_context": {"trusted_ca": {"inline_string": roots_pem}},
        },
    }
