"""Tenant administration: create, list, suspend, delete (the CLI's domain)."""

from __future__ import annotations

import re
import uuid

from peewee import IntegrityError

from swiftmail_core import parent_rows
from swiftmail_core.db import system_db, system_tx
from swiftmail_core.db.conflicts import retry_on_conflict
from swiftmail_core.errors import ConflictError, NotFoundError, ValidationError
from swiftmail_core.models import Tenant, utcnow

_SLUG = re.compile(r"^[a-z0-9][a-z0-9-]{0,62}$")


def create_tenant(slug: str, name: str | None = None) -> Tenant:
    """Create a tenant with a unique slug, and its full send budget.

    The budget row is written here, not by the tenant's first outbox claim:
    inserting it there, with the claim's ledger rows locked, locked the tenant
    (its foreign key) after them, the reverse of ``delete_tenant``'s order.
    """
    if not _SLUG.match(slug):
        raise ValidationError.for_field(
            "slug", "use 1-63 lowercase letters, digits and hyphens, starting with a letter or digit"
        )
    tenant_id = uuid.uuid4()
    try:
        with system_tx():
            [(rate,)] = (Tenant.insert(id=tenant_id, slug=slug, name=name or slug)
                         .returning(Tenant.send_rate_per_second).tuples()
                         .bind(system_db).execute())
            # A full bucket (migration 0195 writes the same). NOTE: VALUES, not INSERT ...
            # SELECT, which Citus runs as a COPY into the shard, refused under RLS.
            system_db.execute_sql("INSERT INTO send_budgets (tenant_id, tokens) VALUES (%s, %s)",
                                  (str(tenant_id), rate))
    except IntegrityError as ex:
        raise ConflictError(f"a tenant with slug {slug!r} already exists") from ex
    return get_tenant(str(tenant_id))


def get_tenant(slug_or_id: str) -> Tenant:
    """Return a tenant by slug or id, or raise NotFoundError."""
    with system_tx():
        query = Tenant.select().bind(system_db)
        try:
            tenant_id = uuid.UUID(slug_or_id)
        except ValueError:
            query = query.where(Tenant.slug == slug_or_id)
        else:
            query = query.where(Tenant.id == tenant_id)
        tenant = query.first()
    if tenant is None:
        raise NotFoundError(f"no tenant {slug_or_id!r}: see `swiftmail tenant list`")
    return tenant


def list_tenants() -> list[Tenant]:
    """Return every tenant ordered by slug."""
    with system_tx():
        return list(Tenant.select().order_by(Tenant.slug).bind(system_db))


def set_tenant_status(slug_or_id: str, status: str) -> Tenant:
    """Suspend or reactivate a tenant; a suspended tenant's keys stop working."""
    tenant = get_tenant(slug_or_id)
    with system_tx():
        Tenant.update(status=status, updated_at=utcnow()).where(Tenant.id == tenant.id).bind(
            system_db
        ).execute()
    return get_tenant(str(tenant.id))


def delete_tenant(slug_or_id: str) -> Tenant:
    """Delete a tenant and every row it owns (by cascade, and contacts and subscriptions)."""
    tenant = get_tenant(slug_or_id)
    _delete_rows(tenant.id)
    return tenant


@retry_on_conflict
def _delete_rows(tenant_id: uuid.UUID) -> None:
    # The delete locks the tenant, then its rows by cascade. A writer that holds
    # one of those rows and then locks the tenant (a foreign key of a row it
    # inserts) takes the reverse order; the hot paths lock the tenant first,
    # and when any other loses to it, the delete, which changed nothing, runs again.
    with system_tx():
        parent_rows.delete_tenant_rows(system_db, tenant_id)
