"""The public subscribe form: a new or known address joins a list."""

from __future__ import annotations

import dataclasses
import uuid

from swiftmail_core.db import app_db, system_tx, tenant_tx
from swiftmail_core.errors import NotFoundError, ValidationError
from swiftmail_core.events import EventRecord, record_events
from swiftmail_core.plugins import PluginManager


@dataclasses.dataclass(frozen=True)
class PublicList:
    """A list as the public form shows it."""

    tenant_id: uuid.UUID
    tenant_name: str
    language: str
    tenant_settings: dict
    list_id: uuid.UUID
    name: str
    description: str
    double_opt_in: bool


@dataclasses.dataclass(frozen=True)
class SignupResult:
    """What happened: the contact, and whether confirmation is still needed."""

    contact_id: uuid.UUID
    status: str


def find_public_list(tenant_slug: str, list_id: str) -> PublicList:
    """Return the list a public form names, or raise NotFoundError."""
    try:
        list_uuid = uuid.UUID(list_id)
    except ValueError as ex:
        raise NotFoundError("no such list") from ex
    with system_tx() as database:
        row = database.execute_sql(
            "SELECT id, name, language, settings FROM tenants WHERE slug = %s "
            "AND status = 'active'", (tenant_slug,),
        ).fetchone()
    if row is None:
        raise NotFoundError("no such list")
    tenant_id = uuid.UUID(str(row[0]))
    # APPSEC: the list is read inside the slug's tenant only (RLS).
    with tenant_tx(tenant_id):
        found = app_db.execute_sql(
            "SELECT name, description, double_opt_in FROM lists WHERE tenant_id = %s AND id = %s",
            (str(tenant_id), str(list_uuid)),
        ).fetchone()
    if found is None:
        raise NotFoundError("no such list")
    return PublicList(tenant_id, row[1], row[2] or "en", dict(row[3] or {}), list_uuid,
                      found[0], found[1], bool(found[2]))


def signup(
    target: PublicList,
    email: str,
    name: str = "",
    *,
    ip: str | None = None,
    plugins: PluginManager | None = None,
) -> SignupResult:
    """Add the address to the list: unconfirmed for double opt-in, else confirmed."""
    email = email.strip()
    local, _, domain = email.partition("@")
    if not local or "." not in domain or len(email) > 254 or any(c.isspace() for c in email):
        raise ValidationError.for_field("email", "enter an email address like name@example.com")
    status = "unconfirmed" if target.double_opt_in else "confirmed"
    tenant = str(target.tenant_id)
    with tenant_tx(target.tenant_id):
        contact_id = app_db.execute_sql(
            "INSERT INTO contacts (tenant_id, id, email, name) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (tenant_id, email_lower) DO UPDATE SET updated_at = now() "
            "RETURNING id",
            (tenant, str(uuid.uuid4()), email, name.strip()[:200]),
        ).fetchone()[0]
        current = app_db.execute_sql(
            "INSERT INTO subscriptions (tenant_id, list_id, contact_id, status, consent_source, "
            "consent_at, consent_ip, confirmed_at) VALUES (%s, %s, %s, %s, 'form', now(), "
            "%s::inet, CASE WHEN %s = 'confirmed' THEN now() END) "
            "ON CONFLICT (tenant_id, list_id, contact_id) DO UPDATE SET "
            "status = CASE WHEN subscriptions.status = 'confirmed' THEN 'confirmed' "
            "ELSE EXCLUDED.status END, consent_source = 'form', consent_at = now(), "
            "consent_ip = EXCLUDED.consent_ip, updated_at = now() RETURNING status",
            (tenant, str(target.list_id), str(contact_id), status, ip or None, status),
        ).fetchone()[0]
    contact_uuid = uuid.UUID(str(contact_id))
    record_events([EventRecord(
        target.tenant_id, "subscribed", contact_id=contact_uuid, email=email,
        detail={"list_ids": [str(target.list_id)], "source": "form", "status": current},
    )], plugins)
    return SignupResult(contact_uuid, current)
