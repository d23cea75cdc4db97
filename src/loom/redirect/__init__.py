"""Transparent proxy traffic redirection (``loom connect redirect-traffic``).

``rules`` builds the nat rule set from a ``RedirectConfig`` (pure, golden-file tested);
``applying`` installs it with ``iptables-restore --noflush`` in a network namespace.
"""

from loom.redirect.applying import ApplyResult, RedirectApplyError, apply_redirect, saved_rules
from loom.redirect.rules import (
    CHAINS,
    RedirectConfig,
    RedirectConfigError,
    RedirectError,
    RuleSet,
    redirect_rules,
)

__all__ = [
    "CHAINS",
    "ApplyResult",
    "RedirectApplyError",
    "RedirectConfig",
    "RedirectConfigError",
    "RedirectError",
    "RuleSet",
    "apply_redirect",
    "redirect_rules",
    "saved_rules",
]
