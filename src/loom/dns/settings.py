"""``DnsSettings``, apart from the proxy: the CLI builds ``loom dns-proxy``'s help from its
defaults, and importing the proxy itself (dnspython, the packet path) for that would make every
``loom`` command, ``--help`` included, pay for it.
"""

from __future__ import annotations

from dataclasses import dataclass

from loom import defaults


@dataclass(frozen=True)
class DnsSettings:
    """How the DNS proxy listens and where it forwards."""

    listen_host: str = "127.0.0.1"
    """Address to bind, UDP and TCP. In pods, DNS to port 53 is redirected here by iptables."""
    listen_port: int = defaults.DNS_PROXY_PORT
    """Port to bind (0 picks a free one, for tests). Not 53: the app may own that in a pod."""
    resolv_conf: str = "/etc/resolv.conf"
    """The pod's resolv.conf: upstream nameservers and the search list auto-path strips."""
    namespace: str = "default"
    """The proxy's own namespace: what ``svc`` alone and ``svc.virtual.consul`` refer to."""
    cluster_domain: str = "cluster.local"
    """The pod's cluster domain (an alias of the table's ClusterDomain if they differ)."""
    upstream_timeout_s: float = 5.0
    """Seconds one upstream server gets (UDP and TCP retry) before the next is tried."""
    cache_size: int = 10000
    """Most forwarded answers kept (LRU); 0 disables the cache."""
    autopath: bool = True
    """Answer ``<known name>.<search domain>`` at once with a CNAME (off only to compare)."""
    upstreams: tuple[str, ...] = ()
    """``ADDR[:PORT]`` upstreams replacing resolv.conf's nameservers (tests, VMs); empty: use
    resolv.conf."""
    batch_syscalls: bool = True
    """Read and answer UDP datagrams in batches (``recvmmsg``/``sendmmsg``, Linux); off: one
    ``recvfrom``/``sendto`` per datagram (what other systems get; tests compare the two)."""
