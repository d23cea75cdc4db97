"""The ACL package's exception tree, and Consul's two refusals a client can tell apart.

``AclError`` is the root; narrower errors live next to the code that raises them
(``RuleSyntaxError`` in ``hcl``, ``RecordError`` in ``records``, ``JwtError`` in ``jwt``...).
Two are shared by every module and have Consul's exact wording, because clients match on it:
``AclNotFound`` ("ACL not found": unknown or expired token) and ``PermissionDenied``
("Permission denied: token with AccessorID '...' lacks permission 'service:write' on "web"").
"""

from __future__ import annotations

from loom.errors import LoomError


class AclError(LoomError):
    """Root of every ACL error; ``str()`` is one line naming the bad field or token."""


class AclNotFound(AclError):
    """The token is unknown, or has expired (Consul answers both the same way)."""

    def __init__(self, detail: str = "") -> None:
        super().__init__("ACL not found" + (f": {detail}" if detail else ""))


class PermissionDenied(AclError):
    """A refusal, worded as Consul's ``PermissionDeniedError.Error()``.

    With a ``resource`` the text names the permission (``'service:write'``) and, when there
    is one, the resource name in double quotes; with only a ``cause`` it is
    ``Permission denied: <cause>``.
    """

    def __init__(
        self,
        *,
        accessor_id: str = "",
        resource: str = "",
        access: str = "",
        name: str = "",
        cause: str = "",
    ) -> None:
        self.accessor_id = accessor_id
        self.resource = resource
        self.access = access
        self.name = name
        self.cause = cause
        super().__init__(self._text())

    def _text(self) -> str:
        text = "Permission denied"
        if self.cause:
            return f"{text}: {self.cause}"
        if not self.resource:
            return text
        who = (
            f"token with AccessorID '{self.accessor_id}'" if self.accessor_id else "provided token"
        )
        text += f": {who} lacks permission '{self.resource}:{self.access}'"
        if self.name:
            text += f' on "{self.name}"'
        return text
