"""The public subscribe form: a new or known address joins a list."""

from __future__ import annotations

import dataclasses
import json
import urllib.parse
import uuid

from swiftmail_core import parent_rows
from swiftmail_core.contact_ids import new_contact_id
from swiftmail_core.db import app_db, system_tx, tenant_tx
from swiftmail_core.errors import NotFoundError, ValidationError
from swiftmail_core.events import EventRecord, record_events
from swiftmail_core.journeys.enrollment import enroll_subscribed
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending import due_tenants

DEFAULT_PUBLIC_URL = "http://127.0.0.1:8000"


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


def _queue_confirmation(target: PublicList, contact_id: uuid.UUID, email: str,
                        secret_key: str | None, public_url: str = "") -> None:
    """Write the double opt-in email to the ledger (inside the caller's tenant_tx).

    NOTE: the same payload shape as ``POST /v1/lists/{id}/subscriptions``
    (``web/resources/subscriptions.py``): the outbox sends ``confirmation``
    rows like transactional messages, the list name travelling as data.
    """
    if not secret_key:
        return
    from swiftmail_core import tokens

    token = tokens.make_confirm_token(secret_key, target.tenant_id, contact_id, target.list_id)
    base = (public_url or DEFAULT_PUBLIC_URL).rstrip("/")
    url = f"{base}/confirm/{token}"
    sender = str(target.tenant_settings.get("default_from_email") or "")
    if not sender:
        domain = app_db.execute_sql(
            "SELECT domain FROM sending_domains ORDER BY verified_at IS NULL, created_at LIMIT 1"
        ).fetchone()
        host = domain[0] if domain else urllib.parse.urlsplit(base).hostname
        sender = f"no-reply@{host or 'localhost'}"
    payload = {
        "list_id": str(target.list_id), "confirm_url": url, "from_email": sender,
        "from_name": target.tenant_name, "reply_to": "",
        "data": {"list_name": target.name, "confirm_url": url},
        "subject": "Please confirm your subscription to {{ contact.data.list_name }}",
        "text": "Confirm your subscription to {{ contact.data.list_name }}:\n\n"
                "{{ contact.data.confirm_url }}\n\n"
                "If you did not ask for this, ignore this message.",
        "html": "<p>Confirm your subscription to {{ contact.data.list_name }}:</p>"
                '<p><a href="{{ contact.data.confirm_url }}">Yes, subscribe me</a></p>'
                "<p>If you did not ask for this, ignore this message.</p>",
    }
    app_db.execute_sql(
        "INSERT INTO messages (tenant_id, contact_id, email, kind, transport, payload) "
        "VALUES (%s, %s, %s, 'confirmation', 'relay', %s::jsonb)",
        (str(target.tenant_id), str(contact_id), email, json.dumps(payload)),
    )
    due_tenants.mark_due(app_db, target.tenant_id)


def signup(
    target: PublicList,
    email: str,
    name: str = "",
    *,
    ip: str | None = None,
    plugins: PluginManager | None = None,
    confirm_secret: str | None = None,
    public_url: str = "",
) -> SignupResult:
    """Add the address to the list: unconfirmed for double opt-in, else confirmed."""
    email = email.strip()
    local, _, domain = email.partition("@")
    if not local or "." not in domain or len(email) > 254 or any(c.isspace() for c in email):
        raise ValidationError.for_field("email", "enter an email address like name@example.com")
    status = "unconfirmed" if target.double_opt_in else "confirmed"
    tenant = str(target.tenant_id)
    with tenant_tx(target.tenant_id):
        # NOTE: stands in for the subscriptions' foreign key to lists (0189).
        if parent_rows.lock_lists(app_db, tenant, [target.list_id]):
            raise NotFoundError("no such list")
        previous = app_db.execute_sql(
            "SELECT s.status, s.consent_at > now() - interval '10 minutes' FROM subscriptions s "
            "JOIN contacts c ON c.tenant_id = s.tenant_id AND c.id = s.contact_id "
            "WHERE s.tenant_id = %s AND s.list_id = %s AND c.email_lower = lower(%s)",
            (tenant, str(target.list_id), email),
        ).fetchone()
        withdrawn = app_db.execute_sql(
            "SELECT EXISTS (SELECT 1 FROM contacts WHERE tenant_id = %s "
            "AND email_lower = lower(%s) AND status <> 'active') OR EXISTS (SELECT 1 FROM "
            "suppressions WHERE tenant_id = %s AND email_lower = lower(%s))",
            (tenant, email, tenant, email)).fetchone()[0]
        if withdrawn or (previous is not None and previous[0] == "unsubscribed"):
            # APPSEC: consent once withdrawn comes back only through a confirmed double
            # opt-in, whatever the list's setting (anyone can post this form).
            status = "unconfirmed"
        # NOTE: stands in for the contacts' foreign key to tenants (0191); the upsert
        # below locks the contact (ON CONFLICT DO UPDATE) for its subscription.
        parent_rows.lock_tenant(app_db, tenant)
        contact_id = app_db.execute_sql(
            "INSERT INTO contacts (tenant_id, id, email, name) VALUES (%s, %s, %s, %s) "
            "ON CONFLICT (tenant_id, email_lower) DO UPDATE SET updated_at = now() "
            "RETURNING id",
            (tenant, str(new_contact_id()), email, name.strip()[:200]),
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
        if current == "confirmed":
            enroll_subscribed(app_db, tenant, [target.list_id], [contact_id])
        # A confirmation email at most every 10 minutes per address and list.
        if current == "unconfirmed" and (previous is None or not previous[1]):
            _queue_confirmation(target, uuid.UUID(str(contact_id)), email, confirm_secret,
                                public_url)
    contact_uuid = uuid.UUID(str(contact_id))
    record_events([EventRecord(
        target.tenant_id, "subscribed", contact_id=contact_uuid, email=email,
        detail={"list_ids": [str(target.list_id)], "source": "form", "status": current},
    )], plugins)
    return SignupResult(contact_uuid, current)
