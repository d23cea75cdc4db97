"""Transparent proxy traffic redirection: what the init container asks redirect-traffic for.

``RedirectPlan`` holds the parameters of ``loom connect redirect-traffic`` for one pod: the
proxy's UID (excluded so Envoy's own traffic is not looped back), its inbound and outbound
ports, the DNS proxy port, and the exclusions from the pod's
``transparent-proxy-exclude-*`` annotations (plus the probe expose ports). ``flags()`` renders
them as command-line arguments; the same list is used by the injected init container, by
``loom k8s connect-init`` and by ``loom local``.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass

from loom.inject.annotations import (
    EXCLUDE_INBOUND_PORTS,
    EXCLUDE_OUTBOUND_CIDRS,
    EXCLUDE_OUTBOUND_PORTS,
    EXCLUDE_UIDS,
    parse_cidrs,
    parse_ports,
    parse_uids,
    text,
)

OUTBOUND_PORT = 15001
"""The sidecar's transparent outbound listener (original_dst)."""


@dataclass(frozen=True)
class RedirectPlan:
    """Parameters of ``loom connect redirect-traffic`` for one pod."""

    proxy_uid: int
    """UID of the sidecar process; its traffic is never redirected."""
    inbound_port: int
    """Port of the sidecar's public (mTLS) inbound listener all inbound traffic goes to."""
    outbound_port: int
    """Port of the sidecar's outbound listener all outbound traffic goes to."""
    exclude_inbound_ports: tuple[int, ...] = ()
    """Inbound destination ports left alone (annotation, then probe expose ports)."""
    exclude_outbound_ports: tuple[int, ...] = ()
    """Outbound destination ports left alone."""
    exclude_outbound_cidrs: tuple[str, ...] = ()
    """Outbound destination addresses/CIDRs left alone."""
    exclude_uids: tuple[str, ...] = ()
    """UIDs whose outbound traffic is left alone, besides the proxy's."""
    dns_port: int | None = None
    """Port of the DNS proxy in the pod that UDP/TCP 53 is sent to; None: DNS not redirected."""

    def flags(self) -> list[str]:
        """The ``loom connect redirect-traffic`` arguments, in a stable order."""
        out = [
            f"--proxy-uid={self.proxy_uid}",
            f"--proxy-inbound-port={self.inbound_port}",
            f"--proxy-outbound-port={self.outbound_port}",
        ]
        out += [f"--exclude-inbound-port={p}" for p in self.exclude_inbound_ports]
        out += [f"--exclude-outbound-port={p}" for p in self.exclude_outbound_ports]
        out += [f"--exclude-outbound-cidr={c}" for c in self.exclude_outbound_cidrs]
        out += [f"--exclude-uid={u}" for u in self.exclude_uids]
        if self.dns_port is not None:
            out.append(f"--dns-port={self.dns_port}")
        return out


@dataclass(frozen=True)
class Exclusions:
    """The ``transparent-proxy-exclude-*`` annotations, parsed (validated even without
    transparent proxy so a typo is caught early)."""

    inbound_ports: tuple[int, ...] = ()
    outbound_ports: tuple[int, ...] = ()
    outbound_cidrs: tuple[str, ...] = ()
    uids: tuple[str, ...] = ()


def parse_exclusions(annotations: Mapping[str, object]) -> Exclusions:
    """The exclusion annotations of a pod; refused on a malformed entry."""
    inbound = text(annotations, EXCLUDE_INBOUND_PORTS)
    outbound = text(annotations, EXCLUDE_OUTBOUND_PORTS)
    cidrs = text(annotations, EXCLUDE_OUTBOUND_CIDRS)
    uids = text(annotations, EXCLUDE_UIDS)
    return Exclusions(
        inbound_ports=parse_ports(EXCLUDE_INBOUND_PORTS, inbound) if inbound else (),
        outbound_ports=parse_ports(EXCLUDE_OUTBOUND_PORTS, outbound) if outbound else (),
        outbound_cidrs=parse_cidrs(EXCLUDE_OUTBOUND_CIDRS, cidrs) if cidrs else (),
        uids=parse_uids(EXCLUDE_UIDS, uids) if uids else (),
    )


def plan_redirect(
    exclusions: Exclusions,
    proxy_uid: int,
    inbound_port: int,
    expose_ports: tuple[int, ...],
    dns_port: int | None,
) -> RedirectPlan:
    """The redirect plan of a transparent-proxy pod."""
    inbound = tuple(dict.fromkeys(exclusions.inbound_ports + expose_ports))
    return RedirectPlan(
        proxy_uid=proxy_uid,
        inbound_port=inbound_port,
        outbound_port=OUTBOUND_PORT,
        exclude_inbound_ports=inbound,
        exclude_outbound_ports=tuple(dict.fromkeys(exclusions.outbound_ports)),
        exclude_outbound_cidrs=tuple(dict.fromkeys(exclusions.outbound_cidrs)),
        exclude_uids=tuple(dict.fromkeys(exclusions.uids)),
        dns_port=dns_port,
    )
