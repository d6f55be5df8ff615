"""Who is asking: the principal an authentication plugin resolves."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Mapping

ROLES = ("viewer", "editor", "admin", "owner")
#: Resources a key's scopes may name (``RESOURCE:read|write|*``). Route plugins add
#: theirs through ``register_scope_resource`` (``swiftmail_web.access`` does it).
SCOPE_RESOURCES: set[str] = {
    "analytics", "api_keys", "campaigns", "contacts", "domains", "exports", "imports", "lists",
    "messages", "segments", "suppressions", "templates", "tenant", "webhooks",
}


def register_scope_resource(name: str) -> None:
    """Make ``name`` a resource that API key scopes may name."""
    SCOPE_RESOURCES.add(name)


def role_at_least(role: str, required: str) -> bool:
    """Return True when ``role`` ranks at or above ``required``."""
    return ROLES.index(role) >= ROLES.index(required)


@dataclasses.dataclass(frozen=True)
class Credentials:
    """What a request or SMTP session presented, scheme-agnostic."""

    authorization: str | None = None
    username: str | None = None
    password: str | None = None
    remote_addr: str | None = None
    headers: Mapping[str, str] = dataclasses.field(default_factory=dict)


@dataclasses.dataclass(frozen=True)
class Principal:
    """An authenticated caller: the tenant is fixed by the credential."""

    tenant_id: uuid.UUID
    role: str
    scopes: frozenset[str] = frozenset()
    key_id: uuid.UUID | None = None
    user_id: uuid.UUID | None = None

    def can(self, required_role: str, scope: str | None = None) -> bool:
        """Return True if the role suffices and, when scoped, the scope is granted."""
        if not role_at_least(self.role, required_role):
            return False
        if scope is None or not self.scopes:
            return True
        resource = scope.split(":", 1)[0]
        return scope in self.scopes or f"{resource}:*" in self.scopes
