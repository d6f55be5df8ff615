"""``/v1/api-keys``: list, create (the key is shown once), revoke.

Only admins and owners manage keys, and nobody can mint a key stronger than
their own: the new key's role is at most the caller's, and a scoped caller
can only grant scopes it holds.
"""

from __future__ import annotations

from typing import Any

import falcon
from swiftmail_web import access
from swiftmail_web.jsonio import Field, Fields, read_body
from swiftmail_web.openapi import Operation, obj, page_of
from swiftmail_web.pagination import paginate
from swiftmail_web.resources.common import (
    NULLABLE_TIMESTAMP,
    STRING,
    TIMESTAMP,
    UUID,
    get_or_404,
    principal,
)

from swiftmail_core.apikeys import create_api_key
from swiftmail_core.errors import PermissionDeniedError, ValidationError
from swiftmail_core.models import ApiKey, utcnow
from swiftmail_core.principal import ROLES, role_at_least

CREATE = Fields(
    name=Field("string", max_length=200),
    # APPSEC: "role" is allowed here only; it is capped at the caller's role below.
    role=Field("string", required=True, enum=ROLES),
    scopes=Field("string_list", max_length=64, max_items=50,
                 description="RESOURCE:read|write|*; empty means all of the role's rights."),
    expires_at=Field("datetime", nullable=True),
)
SCHEMA = obj({
    "object": {"type": "string", "const": "api_key"}, "id": UUID, "name": STRING,
    "prefix": STRING, "role": {"type": "string", "enum": list(ROLES)},
    "scopes": {"type": "array", "items": STRING}, "created_at": TIMESTAMP,
    "last_used_at": NULLABLE_TIMESTAMP, "expires_at": NULLABLE_TIMESTAMP,
    "revoked_at": NULLABLE_TIMESTAMP,
})
CREATED_SCHEMA = obj({**SCHEMA["properties"], "key": {
    "type": "string", "description": "The full key: shown in this response only."}})


def serialize(row: ApiKey) -> dict[str, Any]:
    """Return the API shape of a key (never its secret or hash)."""
    return {
        "object": "api_key", "id": row.id, "name": row.name, "prefix": f"sm_live_{row.lookup_id}",
        "role": row.role, "scopes": list(row.scopes or ()), "created_at": row.created_at,
        "last_used_at": row.last_used_at, "expires_at": row.expires_at,
        "revoked_at": row.revoked_at,
    }


class ApiKeysResource:
    """The collection: list and create."""

    #: APPSEC: shown once; never stored for Idempotency-Key replays.
    replay_omits = ("key",)
    tag = "api-keys"
    policy = {"GET": access.Access("admin", "api_keys:read"),
              "POST": access.Access("admin", "api_keys:write")}
    docs = {
        "GET": Operation("List API keys (never the keys themselves)", response=page_of(SCHEMA),
                         paginated=True),
        "POST": Operation("Create an API key; the key is in this response only",
                          body=CREATE, response=CREATED_SCHEMA, status=201),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response) -> None:
        """List keys, oldest first."""
        from swiftmail_core.db import tenant_tx

        with tenant_tx(principal(req).tenant_id):
            resp.media = paginate(req, ApiKey.select(), ApiKey.created_at, ApiKey.id, serialize)

    def on_post(self, req: falcon.Request, resp: falcon.Response) -> None:
        """Create a key no stronger than the caller's."""
        from swiftmail_core.db import tenant_tx

        caller = principal(req)
        values = CREATE.parse(read_body(req))
        if not role_at_least(caller.role, values["role"]):
            raise PermissionDeniedError(
                f"a {caller.role} cannot create a {values['role']} key")
        scopes = tuple(values.get("scopes") or ())
        if caller.scopes:
            if not scopes:
                scopes = tuple(sorted(caller.scopes))
            for scope in scopes:
                if not caller.can("viewer", scope) or (scope.endswith(":*") and (
                        scope not in caller.scopes)):
                    raise PermissionDeniedError(f"this key cannot grant scope {scope!r}")
        expires_at = values.get("expires_at")
        if expires_at is not None and expires_at <= utcnow():
            raise ValidationError.for_field("expires_at", "must be in the future")
        made = create_api_key(caller.tenant_id, role=values["role"], name=values.get("name", ""),
                              scopes=scopes, expires_at=expires_at)
        with tenant_tx(caller.tenant_id):
            row = ApiKey.get(ApiKey.id == made.id)
        resp.status = 201
        resp.media = {**serialize(row), "key": made.key}
        resp.set_header("Location", f"/v1/api-keys/{made.id}")


class ApiKeyResource:
    """One key: read, revoke."""

    tag = "api-keys"
    policy = {"GET": access.Access("admin", "api_keys:read"),
              "DELETE": access.Access("admin", "api_keys:write")}
    docs = {
        "GET": Operation("Get an API key's metadata", response=SCHEMA),
        "DELETE": Operation("Revoke an API key at once", status=204),
    }

    def on_get(self, req: falcon.Request, resp: falcon.Response, key_id: str) -> None:
        """Return one key's metadata."""
        resp.media = serialize(get_or_404(ApiKey.select(), ApiKey.id, key_id, "API key"))

    def on_delete(self, req: falcon.Request, resp: falcon.Response, key_id: str) -> None:
        """Revoke the key (idempotent for an already revoked key)."""
        row = get_or_404(ApiKey.select().for_update(), ApiKey.id, key_id, "API key")
        caller = principal(req)
        if not role_at_least(caller.role, row.role):
            raise PermissionDeniedError(f"a {caller.role} cannot revoke a {row.role} key")
        if row.revoked_at is None:
            ApiKey.update(revoked_at=utcnow()).where(ApiKey.id == row.id).execute()
        resp.status = 204


def routes(services: dict[str, Any]) -> list[tuple[str, Any]]:
    """Return the API key routes."""
    return [("/v1/api-keys", ApiKeysResource()), ("/v1/api-keys/{key_id}", ApiKeyResource())]
