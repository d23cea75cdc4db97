"""The root of every exception Loom raises on purpose.

Each package defines its own subclass next to the code that raises it (``StoreError``,
``ValidationError``, ``InjectionRefused``...). Third-party errors are wrapped at the package
boundary (``raise XError(...) from exc``) so they never cross layers. The CLI prints
``str(exc)`` of any ``LoomError`` as one line and exits with ``exit_code``; only unexpected
exceptions produce a traceback, and those are bugs.
"""


class LoomError(Exception):
    """Base of all deliberate Loom errors; ``str()`` is a one-line message for a user."""

    exit_code: int = 1
