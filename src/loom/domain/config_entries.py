"""Config entries: validation and canonical form of each kind Loom understands.

Kinds: ``service-defaults``, ``proxy-defaults`` (name ``global``), ``service-intentions``,
``mesh`` (name ``mesh``) and Loom's ``external-service`` (hosts outside the mesh that get
virtual IPs, Istio-ServiceEntry-like). Unknown fields are rejected, as Consul does, so a typo
never silently does nothing.
"""

from __future__ import annotations

from typing import Any

from loom.domain.fields import (
    Fields,
    ValidationError,
    check_name,
    check_namespace,
)
from loom.domain.intentions import ALLOW, DENY

Doc = dict[str, Any]

SERVICE_DEFAULTS = "service-defaults"
PROXY_DEFAULTS = "proxy-defaults"
SERVICE_INTENTIONS = "service-intentions"
MESH = "mesh"
EXTERNAL_SERVICE = "external-service"
KINDS = (SERVICE_DEFAULTS, PROXY_DEFAULTS, SERVICE_INTENTIONS, MESH, EXTERNAL_SERVICE)
PROTOCOLS = ("", "tcp", "http", "http2", "grpc")
MTLS_MODES = ("", "strict", "permissive")
COMMON = ("Kind", "Name", "Namespace", "Meta", "CreateIndex", "ModifyIndex", "Partition")


def entry_key(kind: str, namespace: str, name: str) -> str:
    return f"{kind}/{namespace}/{name}"


def _tproxy(f: Fields | None) -> Doc:
    if f is None:
        return {"OutboundListenerPort": 0, "DialedDirectly": False}
    f.only(("OutboundListenerPort", "DialedDirectly"))
    return {
        "OutboundListenerPort": f.port("OutboundListenerPort"),
        "DialedDirectly": f.flag("DialedDirectly"),
    }


def _http_match(f: Fields) -> Doc:
    f.only(("PathExact", "PathPrefix", "PathRegex", "Methods", "Header"))
    paths = [k for k in ("PathExact", "PathPrefix", "PathRegex") if f.has(k)]
    if len(paths) > 1:
        raise ValidationError(f"{f.path}: set at most one of PathExact, PathPrefix, PathRegex")
    out: Doc = {k: f.text(k) for k in paths}
    methods = [m.upper() for m in f.strs("Methods")]
    if methods:
        out["Methods"] = methods
    headers = []
    for h in f.subs("Header"):
        h.only(("Name", "Present", "Exact", "Prefix", "Suffix", "Regex", "Invert"))
        hd: Doc = {"Name": h.text("Name", required=True)}
        for k in ("Exact", "Prefix", "Suffix", "Regex"):
            if h.has(k):
                hd[k] = h.text(k)
        for k in ("Present", "Invert"):
            if h.has(k):
                hd[k] = h.flag(k)
        headers.append(hd)
    if headers:
        out["Header"] = headers
    return out


def _source(f: Fields) -> Doc:
    f.only(
        (
            "Name", "Namespace", "Peer", "Partition", "Action", "Permissions", "Description",
            "Precedence", "Type", "LegacyID", "LegacyMeta", "LegacyCreateTime", "LegacyUpdateTime",
        )
    )  # fmt: skip
    perms = []
    for p in f.subs("Permissions"):
        p.only(("Action", "HTTP"))
        http = p.sub("HTTP")
        if http is None:
            raise ValidationError(f"{p.where('HTTP')}: is required in a permission")
        perms.append({"Action": p.one_of("Action", (ALLOW, DENY)), "HTTP": _http_match(http)})
    action = f.text("Action")
    if perms and action:
        raise ValidationError(f"{f.where('Action')}: set either Action or Permissions, not both")
    if not perms:
        action = f.one_of("Action", (ALLOW, DENY))
    out: Doc = {
        "Name": check_name(f.text("Name", required=True), f.where("Name"), wildcard=True),
        "Namespace": check_namespace(
            f.text("Namespace", "default") or "default", f.where("Namespace"), wildcard=True
        ),
        "Action": action,
        "Description": f.text("Description"),
        "Type": "consul",
    }
    if perms:
        out["Permissions"] = perms
    return out


def _external_hosts(f: Fields) -> list[str]:
    hosts = f.strs("Hosts")
    if not hosts:
        raise ValidationError(f"{f.where('Hosts')}: at least one host is required")
    for i, host in enumerate(hosts):
        bare = host[2:] if host.startswith("*.") else host
        labels = bare.split(".")
        if (
            not bare
            or any(not lbl or len(lbl) > 63 for lbl in labels)
            or not all(c.isalnum() or c == "-" for lbl in labels for c in lbl)
        ):
            raise ValidationError(f"{f.where('Hosts')}[{i}]: {host!r} is not a host name")
    return [h.lower() for h in hosts]


def validate_entry(body: Any) -> Doc:
    """Validate a config entry of any kind; returns its canonical document."""
    f = Fields(body, "")
    if not f.text("Kind"):
        raise ValidationError("Kind: is required (one of " + ", ".join(KINDS) + ")")
    kind = f.one_of("Kind", KINDS)
    name = f.text("Name", required=True)
    ns = check_namespace(f.text("Namespace", "default") or "default", "Namespace")
    doc: Doc = {"Kind": kind, "Name": name, "Namespace": ns, "Meta": f.str_map("Meta")}
    if kind == SERVICE_DEFAULTS:
        f.only((*COMMON, "Protocol", "MutualTLSMode", "Mode", "TransparentProxy"))
        check_name(name, "Name")
        doc["Protocol"] = f.one_of("Protocol", PROTOCOLS)
        doc["MutualTLSMode"] = f.one_of("MutualTLSMode", MTLS_MODES)
        doc["Mode"] = f.one_of("Mode", ("", "direct", "transparent"))
        doc["TransparentProxy"] = _tproxy(f.sub("TransparentProxy"))
    elif kind == PROXY_DEFAULTS:
        f.only((*COMMON, "Config", "Mode", "TransparentProxy", "MutualTLSMode"))
        if name != "global":
            raise ValidationError("Name: a proxy-defaults entry must be named 'global'")
        doc["Config"] = f.any_map("Config")
        doc["Mode"] = f.one_of("Mode", ("", "direct", "transparent"))
        doc["MutualTLSMode"] = f.one_of("MutualTLSMode", MTLS_MODES)
        doc["TransparentProxy"] = _tproxy(f.sub("TransparentProxy"))
    elif kind == MESH:
        f.only((*COMMON, "TransparentProxy", "AllowEnablingPermissiveMutualTLS"))
        if name != "mesh":
            raise ValidationError("Name: a mesh entry must be named 'mesh'")
        tp = f.sub("TransparentProxy")
        if tp is not None:
            tp.only(("MeshDestinationsOnly",))
        doc["TransparentProxy"] = {
            "MeshDestinationsOnly": tp.flag("MeshDestinationsOnly") if tp else False
        }
        doc["AllowEnablingPermissiveMutualTLS"] = f.flag("AllowEnablingPermissiveMutualTLS", True)
    elif kind == SERVICE_INTENTIONS:
        f.only((*COMMON, "Sources"))
        check_name(name, "Name", wildcard=True)
        sources = [_source(s) for s in f.subs("Sources")]
        seen = set()
        for i, s in enumerate(sources):
            key = (s["Namespace"], s["Name"])
            if key in seen:
                raise ValidationError(f"Sources[{i}]: duplicate source {s['Name']!r}")
            seen.add(key)
        doc["Sources"] = sources
    else:  # external-service
        f.only((*COMMON, "Hosts", "Ports"))
        check_name(name, "Name")
        doc["Hosts"] = _external_hosts(f)
        ports = []
        for p in f.subs("Ports"):
            p.only(("Number", "Protocol", "Name"))
            number = p.port("Number")
            if number == 0:
                raise ValidationError(f"{p.where('Number')}: is required")
            ports.append(
                {"Number": number, "Protocol": p.one_of("Protocol", PROTOCOLS) or "tcp",
                 "Name": p.text("Name")}
            )  # fmt: skip
        if not ports:
            raise ValidationError("Ports: at least one port is required")
        doc["Ports"] = ports
    if kind in (PROXY_DEFAULTS, MESH):
        doc["Namespace"] = "default"
    return doc
