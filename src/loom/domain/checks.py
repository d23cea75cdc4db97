"""Check definitions as Consul accepts them, validated by Consul's type rules.

A check is TTL (the service reports), or one Loom runs: HTTP, TCP, gRPC (grpc.health.v1),
H2PING, alias (of another instance's health) or script (``Args``, refused unless the server
runs with ``--enable-script-checks``, Consul's ``enable_script_checks``). ``parse_definition``
reads one check body (the agent's ``Check``/``Checks`` entries and ``/v1/agent/check/register``
use the top-level form; the catalog's ``Definition`` block the same names) and applies
Consul's ``CheckType.Validate``: one type per check, an interval for the types that poll
(raised to Consul's 1 s minimum), no interval on an alias, a TTL only on TTL checks. Each
error names the field. ``definition_doc`` is the Consul ``Definition`` JSON a check is shown
with, which ``parse_definition`` reads back (the dataplane learns its checks from it).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from loom.domain.fields import Fields, ValidationError, check_id, parse_duration

TTL, HTTP, TCP, GRPC, H2PING = "ttl", "http", "tcp", "grpc", "h2ping"
ALIAS, SCRIPT = "alias", "script"
RUNNABLE = (HTTP, TCP, GRPC, H2PING, ALIAS, SCRIPT)
"""Types a runner probes (TTL checks are reported by the service and swept for expiry)."""
MIN_INTERVAL_S = 1.0
"""Consul's ``checks.MinInterval``: a shorter interval is raised to it."""
DEFAULT_TIMEOUT_S = {HTTP: 10.0, TCP: 10.0, GRPC: 10.0, H2PING: 10.0, SCRIPT: 30.0}
"""Consul's default timeouts per type."""
OUTPUT_MAX_SIZE = 4096
"""Consul's default ``OutputMaxSize``: bytes of probe output kept in a check's Output."""
MAINTENANCE = "maintenance"
"""The ``Type`` of Consul's maintenance checks (``_node_maintenance``,
``_service_maintenance:ID``)."""
NODE_MAINT_ID = "_node_maintenance"
SERVICE_MAINT_PREFIX = "_service_maintenance:"
_NOT_SUPPORTED = ("DockerContainerID", "UDP", "OSService")


@dataclass(frozen=True)
class CheckDefinition:
    """What a runner needs to run one check (Consul's ``CheckType``)."""

    kind: str
    """ttl | http | tcp | grpc | h2ping | alias | script."""
    http: str = ""
    method: str = ""
    """Empty: GET."""
    header: dict[str, tuple[str, ...]] = field(default_factory=dict)
    body: str = ""
    tls_skip_verify: bool = False
    tls_server_name: str = ""
    tcp: str = ""
    """HOST:PORT."""
    grpc: str = ""
    """HOST:PORT or HOST:PORT/SERVICE."""
    grpc_use_tls: bool = False
    h2ping: str = ""
    h2ping_use_tls: bool = True
    """Consul's ``H2PingUseTLS`` (default true)."""
    alias_service: str = ""
    alias_node: str = ""
    """Empty: the check's own node."""
    args: tuple[str, ...] = ()
    interval_s: float = 0.0
    """Seconds between runs (0 for TTL and alias)."""
    timeout_s: float = 0.0
    """Seconds a probe may take (the type's default when not given)."""
    ttl_s: float = 0.0
    success_before_passing: int = 0
    failures_before_warning: int = 0
    """Defaults to ``failures_before_critical`` (Consul's rule)."""
    failures_before_critical: int = 0
    deregister_after_s: float = 0.0
    """DeregisterCriticalServiceAfter: 0 never; else the service is removed once the check
    has been critical this long (Consul's minimum, 60 s, applies)."""

    @property
    def runnable(self) -> bool:
        return self.kind in RUNNABLE


def _duration(f: Fields, key: str) -> float:
    """A Go duration given as ``"10s"`` or as an integer of nanoseconds (Consul takes both)."""
    raw = f.raw(key)
    if raw is None or raw == "":
        return 0.0
    if isinstance(raw, int) and not isinstance(raw, bool):
        if raw < 0:
            raise ValidationError(f"{f.where(key)}: must not be negative")
        return raw / 1e9
    return parse_duration(f.text(key), f.where(key))


def _headers(f: Fields) -> dict[str, tuple[str, ...]]:
    out: dict[str, tuple[str, ...]] = {}
    for name, values in f.any_map("Header").items():
        where = f.where(f"Header.{name}")
        if isinstance(values, str):
            values = [values]
        if not isinstance(values, list) or not all(isinstance(v, str) for v in values):
            raise ValidationError(f"{where}: expected a list of strings")
        out[name] = tuple(values)
    return out


def _count(f: Fields, key: str) -> int:
    return f.integer(key, 0, 0, 1_000_000)


def parse_definition(f: Fields, scripts: bool, lenient: bool = False) -> CheckDefinition | None:
    """One check's definition; None for a check of no type (a static check: its status is
    set through the API, as Loom's Kubernetes controller does for readiness).

    ``scripts``: script checks are allowed (``--enable-script-checks``). ``lenient``: the
    catalog's rules, which store a definition without validating its type rules.
    """
    for name in _NOT_SUPPORTED:
        if f.has(name) and f.raw(name) not in ("", None):
            raise ValidationError(f"{f.where(name)}: {name} checks are not supported by Loom")
    args = tuple(f.strs("Args")) if f.has("Args") else tuple(f.strs("ScriptArgs"))
    if f.has("Script") and f.text("Script"):
        raise ValidationError(f"{f.where('Script')}: is no longer supported; use Args")
    given = {
        HTTP: f.text("HTTP"),
        TCP: f.text("TCP"),
        GRPC: f.text("GRPC"),
        H2PING: f.text("H2PING"),
        SCRIPT: "x" if args else "",
        ALIAS: f.text("AliasService"),
    }
    kinds = [k for k, v in given.items() if v]
    if len(kinds) > 1:
        names = ", ".join({HTTP: "HTTP", TCP: "TCP", GRPC: "GRPC", H2PING: "H2PING",
                           SCRIPT: "Args", ALIAS: "AliasService"}[k] for k in kinds)  # fmt: skip
        raise ValidationError(f"{f.path or 'check'}: a check has one type, got {names}")
    interval = _duration(f, "Interval")
    timeout = _duration(f, "Timeout")
    ttl = _duration(f, "TTL")
    kind = kinds[0] if kinds else (TTL if ttl else "")
    if not lenient:
        if interval and ttl:
            raise ValidationError(
                f"{f.where('Interval')}: Interval and TTL cannot both be specified"
            )
        if kind in (HTTP, TCP, GRPC, H2PING, SCRIPT) and interval <= 0:
            raise ValidationError(
                f"{f.where('Interval')}: Interval must be > 0 for Script, HTTP, H2PING, "
                "TCP, UDP or OSService checks"
            )
        if kind == ALIAS and interval:
            raise ValidationError(f"{f.where('Interval')}: Interval cannot be set for Alias checks")
        if kind == ALIAS and ttl:
            raise ValidationError(f"{f.where('TTL')}: TTL must be not be set for Alias checks")
        if kind == SCRIPT and not scripts:
            raise ValidationError(
                f"{f.where('Args')}: Scripts are disabled on this agent; to enable, configure "
                "'enable_script_checks' or 'enable_local_script_checks' to true "
                "(loom server --enable-script-checks)"
            )
        if kind == ALIAS and f.text("AliasService"):
            check_id(f.text("AliasService"), f.where("AliasService"))
    if not kind:
        return None
    if kind in DEFAULT_TIMEOUT_S:
        interval = max(interval, MIN_INTERVAL_S) if interval else 0.0
        timeout = timeout or DEFAULT_TIMEOUT_S[kind]
    method = f.text("Method").upper()
    critical = _count(f, "FailuresBeforeCritical")
    return CheckDefinition(
        kind=kind,
        http=given[HTTP],
        method=method,
        header=_headers(f),
        body=f.text("Body"),
        tls_skip_verify=f.flag("TLSSkipVerify"),
        tls_server_name=f.text("TLSServerName"),
        tcp=given[TCP],
        grpc=given[GRPC],
        grpc_use_tls=f.flag("GRPCUseTLS"),
        h2ping=given[H2PING],
        h2ping_use_tls=f.flag("H2PingUseTLS", True),
        alias_service=given[ALIAS],
        alias_node=f.text("AliasNode"),
        args=args,
        interval_s=interval,
        timeout_s=timeout,
        ttl_s=ttl,
        success_before_passing=_count(f, "SuccessBeforePassing"),
        failures_before_warning=_count(f, "FailuresBeforeWarning") or critical,
        failures_before_critical=critical,
        deregister_after_s=_duration(f, "DeregisterCriticalServiceAfter"),
    )


def go_duration(seconds: float) -> str:
    """Seconds as Go prints a ``time.Duration`` (``10s``, ``1m30s``, ``500ms``, ``0s``)."""
    if seconds <= 0:
        return "0s"
    if seconds < 1:
        ms = seconds * 1000
        return f"{ms:g}ms" if ms >= 1 else f"{seconds * 1e6:g}µs"
    hours, rest = divmod(seconds, 3600)
    minutes, secs = divmod(rest, 60)
    out = f"{int(hours)}h" if hours else ""
    out += f"{int(minutes)}m" if hours or minutes else ""
    return out + f"{secs:g}s"


def definition_doc(d: CheckDefinition | None, ttl: str = "") -> dict[str, Any]:
    """Consul's ``Definition`` of a check (its HealthCheckDefinition), plus Loom's thresholds
    (``SuccessBeforePassing``...) so a dataplane can run the check as defined."""
    if d is None:
        return {"TTL": ttl} if ttl else {}
    out: dict[str, Any] = {}
    if d.kind == HTTP:
        out.update(HTTP=d.http, Method=d.method, Header={k: list(v) for k, v in d.header.items()},
                   Body=d.body, TLSSkipVerify=d.tls_skip_verify,
                   TLSServerName=d.tls_server_name)  # fmt: skip
    elif d.kind == TCP:
        out["TCP"] = d.tcp
    elif d.kind == GRPC:
        out.update(GRPC=d.grpc, GRPCUseTLS=d.grpc_use_tls)
    elif d.kind == H2PING:
        out.update(H2PING=d.h2ping, H2PingUseTLS=d.h2ping_use_tls)
    elif d.kind == ALIAS:
        out.update(AliasService=d.alias_service, AliasNode=d.alias_node)
    elif d.kind == SCRIPT:
        out["ScriptArgs"] = list(d.args)
    elif d.kind == TTL:
        out["TTL"] = ttl or go_duration(d.ttl_s)
    if d.interval_s:
        out["Interval"] = go_duration(d.interval_s)
    if d.timeout_s:
        out["Timeout"] = go_duration(d.timeout_s)
    if d.deregister_after_s:
        out["DeregisterCriticalServiceAfter"] = go_duration(d.deregister_after_s)
    for key, value in (
        ("SuccessBeforePassing", d.success_before_passing),
        ("FailuresBeforeWarning", d.failures_before_warning),
        ("FailuresBeforeCritical", d.failures_before_critical),
    ):
        if value:
            out[key] = value
    return out


def check_type(d: CheckDefinition | None, ttl: str = "") -> str:
    """The ``Type`` Consul shows: the definition's kind, ``ttl``, or empty for a static check."""
    if d is not None:
        return d.kind
    return TTL if ttl else ""
