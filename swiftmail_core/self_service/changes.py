"""Unsubscribe, preference changes and double opt-in confirmation."""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Iterable

from swiftmail_core.db import app_db, tenant_tx
from swiftmail_core.errors import NotFoundError
from swiftmail_core.events import EventRecord, record_events
from swiftmail_core.journeys.enrollment import enroll_subscribed, exit_contact
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending import state


@dataclasses.dataclass(frozen=True)
class ListChoice:
    """One list on the preference page and whether the contact receives it."""

    list_id: uuid.UUID
    name: str
    description: str
    subscribed: bool
    status: str


@dataclasses.dataclass(frozen=True)
class SubscriberView:
    """What the public pages show about a contact (no more than needed)."""

    tenant_id: uuid.UUID
    tenant_name: str
    language: str
    tenant_settings: dict
    contact_id: uuid.UUID
    email: str
    suppressed: bool
    lists: tuple[ListChoice, ...]

    def list_named(self, list_id: uuid.UUID | None) -> ListChoice | None:
        """Return the list choice with ``list_id``, if the contact has one."""
        return next((choice for choice in self.lists if choice.list_id == list_id), None)


def _load(tenant_id: uuid.UUID, contact_id: uuid.UUID) -> SubscriberView:
    tenant = app_db.execute_sql(
        "SELECT name, language, settings FROM tenants WHERE id = %s", (str(tenant_id),)
    ).fetchone()
    contact = app_db.execute_sql(
        "SELECT email, email_lower FROM contacts WHERE tenant_id = %s AND id = %s",
        (str(tenant_id), str(contact_id)),
    ).fetchone()
    if tenant is None or contact is None:
        raise NotFoundError("this link no longer points to a subscriber")
    suppressed = app_db.execute_sql(
        "SELECT 1 FROM suppressions WHERE tenant_id = %s AND email_lower = %s",
        (str(tenant_id), contact[1]),
    ).fetchone() is not None
    rows = app_db.execute_sql(
        "SELECT l.id, l.name, l.description, s.status FROM subscriptions s "
        "JOIN lists l ON l.tenant_id = s.tenant_id AND l.id = s.list_id "
        "WHERE s.tenant_id = %s AND s.contact_id = %s ORDER BY l.name",
        (str(tenant_id), str(contact_id)),
    ).fetchall()
    lists = tuple(
        ListChoice(uuid.UUID(str(list_id)), name, description,
                   status == "confirmed" and not suppressed, status)
        for list_id, name, description, status in rows
    )
    return SubscriberView(tenant_id, tenant[0], tenant[1] or "en", dict(tenant[2] or {}),
                          contact_id, contact[0], suppressed, lists)


def load_subscriber(tenant_id: uuid.UUID, contact_id: uuid.UUID) -> SubscriberView:
    """Return the contact, its lists and its tenant's name and language."""
    # APPSEC: tenant_id comes from a verified token; RLS scopes every read to it.
    with tenant_tx(tenant_id):
        return _load(tenant_id, contact_id)


def _cancel_queued(tenant_id: uuid.UUID, contact_id: uuid.UUID, list_ids: list[str] | None) -> None:
    """Cancel this contact's campaign mail not yet claimed (all, or for these lists).

    That includes rows not due yet: an A/B test's ``waiting`` rows and a paused
    campaign's ``held`` ones join the queue later, and the claim checks the
    contact and suppressions, not one list's subscription.
    """
    state.cancel_unsubscribed(app_db, tenant_id, contact_id, "campaign", list_ids)


def _leave_journeys(tenant_id: uuid.UUID, contact_id: uuid.UUID) -> None:
    """Take the contact out of every journey, with its journey mail not yet claimed."""
    exit_contact(app_db, tenant_id, contact_id, "unsubscribed")
    state.cancel_unsubscribed(app_db, tenant_id, contact_id, "journey")


def _last_campaign(tenant_id: uuid.UUID, contact_id: uuid.UUID) -> uuid.UUID | None:
    row = app_db.execute_sql(
        "SELECT campaign_id FROM messages WHERE tenant_id = %s AND contact_id = %s "
        "AND kind = 'campaign' AND sent_at IS NOT NULL ORDER BY sent_at DESC LIMIT 1",
        (str(tenant_id), str(contact_id)),
    ).fetchone()
    return uuid.UUID(str(row[0])) if row and row[0] else None


def unsubscribe(
    tenant_id: uuid.UUID,
    contact_id: uuid.UUID,
    list_id: uuid.UUID | None,
    *,
    source: str,
    plugins: PluginManager | None = None,
) -> bool:
    """Unsubscribe from one list (or every list when None); return whether it changed.

    Every list also suppresses the address, so no later campaign reaches it.
    Unclaimed campaign mail to the contact is cancelled in the same
    transaction: the unsubscribe holds before the next outbox claim.
    """
    # APPSEC: tenant and contact come from a verified, tenant-bound token.
    with tenant_tx(tenant_id):
        view = _load(tenant_id, contact_id)
        tenant, contact = str(tenant_id), str(contact_id)
        if list_id is not None:
            changed = app_db.execute_sql(
                "UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = now(), "
                "updated_at = now() WHERE tenant_id = %s AND contact_id = %s AND list_id = %s "
                "AND status <> 'unsubscribed' RETURNING 1",
                (tenant, contact, str(list_id)),
            ).fetchall()
            _cancel_queued(tenant_id, contact_id, [str(list_id)])
        else:
            changed = app_db.execute_sql(
                "UPDATE subscriptions SET status = 'unsubscribed', unsubscribed_at = now(), "
                "updated_at = now() WHERE tenant_id = %s AND contact_id = %s "
                "AND status <> 'unsubscribed' RETURNING 1",
                (tenant, contact),
            ).fetchall()
            added = app_db.execute_sql(
                "INSERT INTO suppressions (tenant_id, email_lower, reason, source) "
                "VALUES (%s, lower(%s), 'unsubscribe', %s) ON CONFLICT DO NOTHING RETURNING 1",
                (tenant, view.email, source),
            ).fetchall()
            app_db.execute_sql(
                "UPDATE contacts SET status = 'unsubscribed', updated_at = now() "
                "WHERE tenant_id = %s AND id = %s AND status = 'active'",
                (tenant, contact),
            )
            _cancel_queued(tenant_id, contact_id, None)
            changed = changed + added
        if changed:
            # Any unsubscribe takes the contact out of every journey at once.
            _leave_journeys(tenant_id, contact_id)
        campaign_id = _last_campaign(tenant_id, contact_id) if changed else None
    if changed:
        record_events([EventRecord(
            tenant_id, "unsubscribed", contact_id=contact_id, email=view.email,
            campaign_id=campaign_id,
            detail={"list_id": str(list_id) if list_id else None, "source": source},
        )], plugins)
    return bool(changed)


def set_preferences(
    tenant_id: uuid.UUID,
    contact_id: uuid.UUID,
    subscribed_list_ids: Iterable[uuid.UUID],
    *,
    plugins: PluginManager | None = None,
) -> SubscriberView:
    """Make the contact receive exactly the chosen lists among its own lists."""
    wanted = {str(list_id) for list_id in subscribed_list_ids}
    with tenant_tx(tenant_id):
        view = _load(tenant_id, contact_id)
    for choice in view.lists:
        if choice.subscribed and str(choice.list_id) not in wanted:
            unsubscribe(tenant_id, contact_id, choice.list_id, source="preferences",
                        plugins=plugins)
    resubscribed = [
        choice.list_id for choice in view.lists
        if not choice.subscribed and str(choice.list_id) in wanted
    ]
    if resubscribed:
        with tenant_tx(tenant_id):
            app_db.execute_sql(
                "UPDATE subscriptions SET status = 'confirmed', unsubscribed_at = NULL, "
                "confirmed_at = coalesce(confirmed_at, now()), consent_source = 'preferences', "
                "consent_at = now(), updated_at = now() "
                "WHERE tenant_id = %s AND contact_id = %s AND list_id = ANY(%s::uuid[])",
                (str(tenant_id), str(contact_id), [str(x) for x in resubscribed]),
            )
            # The subscriber asked again, in person: lift only their own unsubscribe.
            app_db.execute_sql(
                "DELETE FROM suppressions WHERE tenant_id = %s AND email_lower = lower(%s) "
                "AND reason = 'unsubscribe'",
                (str(tenant_id), view.email),
            )
            app_db.execute_sql(
                "UPDATE contacts SET status = 'active', updated_at = now() "
                "WHERE tenant_id = %s AND id = %s AND status = 'unsubscribed'",
                (str(tenant_id), str(contact_id)),
            )
            enroll_subscribed(app_db, tenant_id, resubscribed, [contact_id])
        record_events([EventRecord(
            tenant_id, "subscribed", contact_id=contact_id, email=view.email,
            detail={"list_ids": [str(x) for x in resubscribed], "source": "preferences"},
        )], plugins)
    return load_subscriber(tenant_id, contact_id)


def confirm(
    tenant_id: uuid.UUID,
    contact_id: uuid.UUID,
    list_id: uuid.UUID,
    *,
    ip: str | None = None,
    plugins: PluginManager | None = None,
) -> bool:
    """Confirm a double opt-in subscription; return whether it changed.

    Only an ``unconfirmed`` subscription is confirmed: a link clicked after an
    unsubscribe changes nothing (and the page must not claim success).
    """
    with tenant_tx(tenant_id):
        view = _load(tenant_id, contact_id)
        changed = app_db.execute_sql(
            "UPDATE subscriptions SET status = 'confirmed', confirmed_at = now(), "
            "consent_ip = coalesce(%s::inet, consent_ip), updated_at = now() "
            "WHERE tenant_id = %s AND contact_id = %s AND list_id = %s "
            "AND status = 'unconfirmed' RETURNING 1",
            (ip or None, str(tenant_id), str(contact_id), str(list_id)),
        ).fetchall()
        if changed:
            enroll_subscribed(app_db, tenant_id, [list_id], [contact_id])
    if changed:
        record_events([EventRecord(
            tenant_id, "confirmed", contact_id=contact_id, email=view.email,
            detail={"list_id": str(list_id)},
        )], plugins)
    return bool(changed)
