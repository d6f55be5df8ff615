"""Who may call what: each resource declares a policy per HTTP method.

Deny by default: a method with a responder but no entry in the resource's
``policy`` is refused with 403, and a resource without ``policy`` (and not
marked ``public = True``) is refused for every method.
"""

from __future__ import annotations

import dataclasses

from swiftmail_core.errors import AuthenticationError, PermissionDeniedError
from swiftmail_core.principal import Principal, register_scope_resource


@dataclasses.dataclass(frozen=True)
class Access:
    """The least role and the scope a method requires."""

    role: str
    scope: str | None = None


def read(resource: str) -> Access:
    """Return the policy of a read: any role, ``RESOURCE:read`` scope."""
    register_scope_resource(resource)
    return Access("viewer", f"{resource}:read")


def write(resource: str, role: str = "editor") -> Access:
    """Return the policy of a write: ``role`` or above, ``RESOURCE:write`` scope."""
    register_scope_resource(resource)
    return Access(role, f"{resource}:write")


def check(resource: object, method: str, principal: Principal | None) -> Access | None:
    """Raise unless ``principal`` may call ``method`` on ``resource``.

    Returns the matched policy, or None for a public resource.
    """
    if getattr(resource, "public", False):
        return None
    if principal is None:
        raise AuthenticationError(
            "send an API key: Authorization: Bearer sm_live_..."
        )
    if not hasattr(resource, f"on_{method.lower()}"):
        return None  # Falcon answers 405 itself; nothing of the resource runs
    policy: dict[str, Access] = getattr(resource, "policy", {}) or {}
    # APPSEC: deny by default; OPTIONS is answered without data by Falcon.
    access = policy.get(method)
    if access is None:
        if method == "OPTIONS":
            return None
        raise PermissionDeniedError(f"{method} is not allowed on this resource")
    if not principal.can(access.role, access.scope):
        needed = f"role {access.role}" + (f" and scope {access.scope}" if access.scope else "")
        raise PermissionDeniedError(f"this key's role or scopes do not allow it: needs {needed}")
    return access
