"""Errors of the injection planner, kept apart so every planner module can raise them.

``InjectError`` is the package root. ``InjectionRefused`` means a pod asked for injection with
an annotation (or namespace label) whose value Loom cannot honour: the webhook answers it with
``allowed: false`` and ``loom inject`` exits non-zero; its message always names the annotation
and quotes the bad value, so the one line a user sees says what to fix. ``SettingsError`` is a
bad Helm-style values file; its message names the key.
"""

from __future__ import annotations

from loom.errors import LoomError


class InjectError(LoomError):
    """Root of the errors raised by ``loom.inject``."""


class InjectionRefused(InjectError):
    """A pod cannot be injected as annotated; names the annotation and the bad value."""

    def __init__(self, annotation: str, value: object, why: str) -> None:
        self.annotation = annotation
        self.value = value
        self.why = why
        super().__init__(f"{annotation}={value!r}: {why}")


class SettingsError(InjectError):
    """A values file (Helm-style settings) has a bad key or value; names the key."""

    exit_code = 2
