"""Transparent proxy traffic redirection (``loom connect redirect-traffic``).

``config`` holds ``RedirectConfig``, the one description of what to redirect where (the
injector's planner emits it, the CLI parses flags into it, ``to_flags``/``from_flags`` carry it
on an init container's command line); ``rules`` builds the nat rule set from it (pure,
golden-file tested); ``applying`` installs it with ``iptables-restore --noflush`` in a network
namespace (import it from ``loom.redirect.applying``: this package's top level stays pure, so
the planner can use ``RedirectConfig`` without loading subprocess code). ``RedirectError`` is
the root of the package's errors.
"""

from loom.redirect.config import (
    FLAGS,
    RedirectConfig,
    RedirectConfigError,
    RedirectError,
    add_arguments,
    config_from_namespace,
)
from loom.redirect.rules import CHAINS, RuleSet, redirect_rules

__all__ = [
    "CHAINS",
    "FLAGS",
    "RedirectConfig",
    "RedirectConfigError",
    "RedirectError",
    "RuleSet",
    "add_arguments",
    "config_from_namespace",
    "redirect_rules",
]
