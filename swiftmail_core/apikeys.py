"""API keys: ``sm_live_<lookup>_<secret>``, shown once, stored as a hash.

The lookup part finds the row (through the system role, before the tenant is
known); the SHA-256 of the whole key is compared in constant time. Keys carry
128+ bits of randomness, so a fast hash is the right tool here; passwords,
which people choose, get argon2 instead.
"""

from __future__ import annotations

import dataclasses
import datetime
import difflib
import hashlib
import hmac
import re
import secrets
import uuid

from swiftmail_core.db import app_db, system_db, system_tx, tenant_tx
from swiftmail_core.errors import AuthenticationError, NotFoundError, ValidationError
from swiftmail_core.models import ApiKey, Tenant, utcnow
from swiftmail_core.principal import ROLES, SCOPE_RESOURCES, Principal

PREFIX = "sm_live_"
_ALPHABET = "0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
_KEY = re.compile(r"^sm_live_([0-9A-Za-z]{12})_([0-9A-Za-z]{40})$")
_SCOPE = re.compile(r"^[a-z_]+:(read|write|\*)$")


def _random(length: int) -> str:
    return "".join(secrets.choice(_ALPHABET) for _ in range(length))


def hash_key(key: str) -> bytes:
    """Return the stored hash of a full API key."""
    return hashlib.sha256(key.encode()).digest()


@dataclasses.dataclass(frozen=True)
class CreatedKey:
    """A new key: the only moment its full text exists."""

    id: uuid.UUID
    key: str
    role: str
    scopes: tuple[str, ...]


def create_api_key(
    tenant_id: uuid.UUID | str,
    *,
    role: str,
    name: str = "",
    scopes: tuple[str, ...] = (),
    created_by: uuid.UUID | None = None,
    expires_at: datetime.datetime | None = None,
) -> CreatedKey:
    """Create a key for a tenant; return it in full (never stored in clear)."""
    if role not in ROLES:
        raise ValidationError.for_field("role", f"must be one of {', '.join(ROLES)}")
    for scope in scopes:
        if not _SCOPE.match(scope):
            raise ValidationError.for_field(
                "scopes", f"{scope!r} is not RESOURCE:read, RESOURCE:write or RESOURCE:*"
            )
        # A scope on a resource that does not exist grants nothing: refuse it.
        resource = scope.split(":", 1)[0]
        if resource not in SCOPE_RESOURCES:
            near = difflib.get_close_matches(resource, sorted(SCOPE_RESOURCES), n=1)
            hint = f" (did you mean {near[0]}?)" if near else ""
            raise ValidationError.for_field(
                "scopes", f"{scope!r} names no resource{hint}; resources: "
                + ", ".join(sorted(SCOPE_RESOURCES)))
    lookup_id = _random(12)
    key = f"{PREFIX}{lookup_id}_{_random(40)}"
    key_id = uuid.uuid4()
    with tenant_tx(tenant_id):
        ApiKey.insert(
            tenant_id=uuid.UUID(str(tenant_id)),
            id=key_id,
            name=name,
            lookup_id=lookup_id,
            secret_hash=hash_key(key),
            role=role,
            scopes=list(scopes),
            created_by=created_by,
            expires_at=expires_at,
        ).execute()
        app_db.execute_sql(
            "INSERT INTO api_key_lookups (lookup_id, tenant_id) VALUES (%s, %s)",
            (lookup_id, str(tenant_id)))
    return CreatedKey(key_id, key, role, tuple(scopes))


def list_api_keys(tenant_id: uuid.UUID | str) -> list[ApiKey]:
    """Return a tenant's keys, newest first (hashes included, never the keys)."""
    with tenant_tx(tenant_id):
        return list(ApiKey.select().order_by(ApiKey.created_at.desc(), ApiKey.id))


def revoke_api_key(tenant_id: uuid.UUID | str, key_id: uuid.UUID | str) -> None:
    """Revoke a key at once; another tenant's key id is simply not found."""
    with tenant_tx(tenant_id):
        updated = (
            ApiKey.update(revoked_at=utcnow())
            .where(ApiKey.id == key_id, ApiKey.revoked_at.is_null())
            .execute()
        )
    if not updated:
        raise NotFoundError(f"no active API key {key_id}")


def authenticate_key(key: str) -> Principal:
    """Return the principal of a valid key, or raise AuthenticationError."""
    match = _KEY.match(key)
    if not match:
        raise AuthenticationError("malformed API key: expected sm_live_...")
    presented = hash_key(key)
    now = utcnow()
    with system_tx():
        # APPSEC: the lookup is cross-tenant by necessity; the tenant is then
        # fixed by the row, never by anything else in the request. NOTE: the
        # tenant first (api_key_lookups), so the key is read in its tenant's
        # shard on Citus instead of on every shard.
        tenants = [tenant for (tenant,) in system_db.execute_sql(
            "SELECT tenant_id FROM api_key_lookups WHERE lookup_id = %s", (match[1],))]
        rows = list(
            ApiKey.select(ApiKey, Tenant.status.alias("tenant_status"))
            .join(Tenant, on=(Tenant.id == ApiKey.tenant_id))
            .where(ApiKey.tenant_id.in_(tenants), ApiKey.lookup_id == match[1])
            .bind(system_db)
            .objects()
        ) if tenants else []
        for row in rows:
            if not hmac.compare_digest(bytes(row.secret_hash), presented):
                continue
            if row.revoked_at is not None:
                raise AuthenticationError("API key has been revoked")
            if row.expires_at is not None and row.expires_at <= now:
                raise AuthenticationError("API key has expired")
            if getattr(row, "tenant_status", None) != "active":
                raise AuthenticationError("this tenant is suspended")
            if row.last_used_at is None or now - row.last_used_at > datetime.timedelta(minutes=1):
                ApiKey.update(last_used_at=now).where(
                    ApiKey.tenant_id == row.tenant_id, ApiKey.id == row.id
                ).bind(system_db).execute()
            return Principal(
                tenant_id=row.tenant_id,
                role=row.role,
                scopes=frozenset(row.scopes or ()),
                key_id=row.id,
            )
    raise AuthenticationError("unknown API key")
