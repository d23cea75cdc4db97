"""Transparent proxy traffic redirection: the ``RedirectConfig`` a pod's annotations ask for.

``plan_redirect`` builds the one ``loom.redirect.RedirectConfig`` of a pod: the proxy's UID
(excluded so Envoy's own traffic is not looped back), its inbound and outbound ports, the DNS
proxy port, and the exclusions from the pod's ``transparent-proxy-exclude-*`` annotations
(plus the probe expose ports, ``exclude_inbound``). It is the very value connect-init and
``loom local`` apply; the injected init container carries it as ``RedirectConfig.to_flags()``.

The annotations are only split and read as numbers here; whether a port, UID or CIDR is valid
is ``RedirectConfig``'s to say (the one place that checks), and its refusal is turned into an
``InjectionRefused`` naming the annotation the bad value came from.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import replace
from typing import TypeVar

from loom.defaults import OUTBOUND_PORT
from loom.inject.annotations import (
    EXCLUDE_INBOUND_PORTS,
    EXCLUDE_OUTBOUND_CIDRS,
    EXCLUDE_OUTBOUND_PORTS,
    EXCLUDE_UIDS,
    parse_ports,
    parse_uids,
    split_list,
    text,
)
from loom.inject.errors import InjectionRefused, SettingsError
from loom.redirect.config import RedirectConfig, RedirectConfigError

_ANNOTATION_OF = {
    "exclude_inbound_ports": EXCLUDE_INBOUND_PORTS,
    "exclude_outbound_ports": EXCLUDE_OUTBOUND_PORTS,
    "exclude_outbound_cidrs": EXCLUDE_OUTBOUND_CIDRS,
    "exclude_uids": EXCLUDE_UIDS,
}
"""``RedirectConfig`` field -> the annotation its values come from."""

_T = TypeVar("_T")


def plan_redirect(
    annotations: Mapping[str, object],
    proxy_uid: int,
    inbound_port: int,
    dns_port: int | None,
) -> RedirectConfig:
    """The redirect configuration of a pod, exclusions from its annotations (each once, in
    annotation order). Called for every injected pod, so a typo in an exclusion is refused
    even without transparent proxy."""
    inbound = text(annotations, EXCLUDE_INBOUND_PORTS)
    outbound = text(annotations, EXCLUDE_OUTBOUND_PORTS)
    cidrs = text(annotations, EXCLUDE_OUTBOUND_CIDRS)
    uids = text(annotations, EXCLUDE_UIDS)
    inbound_ports = parse_ports(EXCLUDE_INBOUND_PORTS, inbound) if inbound else ()
    try:
        return RedirectConfig(
            proxy_uid=proxy_uid,
            proxy_inbound_port=inbound_port,
            proxy_outbound_port=OUTBOUND_PORT,
            exclude_inbound_ports=_once(inbound_ports),
            exclude_outbound_ports=_once(
                parse_ports(EXCLUDE_OUTBOUND_PORTS, outbound) if outbound else ()
            ),
            exclude_outbound_cidrs=_once(split_list(cidrs) if cidrs else ()),
            exclude_uids=_once(parse_uids(EXCLUDE_UIDS, uids) if uids else ()),
            dns_port=dns_port,
        )
    except RedirectConfigError as exc:
        annotation = _ANNOTATION_OF.get(exc.field or "")
        if annotation is None:  # the proxy's own ports and UID come from the settings
            raise SettingsError(f"transparent proxy settings: {exc}") from exc
        raise InjectionRefused(annotation, annotations.get(annotation), exc.why) from exc


def exclude_inbound(config: RedirectConfig, ports: tuple[int, ...]) -> RedirectConfig:
    """``config`` with ``ports`` (the probe expose listeners kubelet calls) also excluded from
    inbound redirection, after the annotation's, each port once."""
    if not ports:  # the common case: nothing to add, the very same value
        return config
    return replace(config, exclude_inbound_ports=_once(config.exclude_inbound_ports + ports))


def _once(items: tuple[_T, ...]) -> tuple[_T, ...]:
    return tuple(dict.fromkeys(items))
