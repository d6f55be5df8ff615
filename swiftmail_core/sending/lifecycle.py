"""Campaign lifecycle: schedule, pause, resume, cancel, test and resend.

The status machine (``TRANSITIONS``): draft -> scheduled -> sending ->
sent, with paused beside sending and cancelled reachable from every state
that has not finished. Every change is one conditional UPDATE inside the
tenant's transaction, so two callers racing cannot both win: the loser gets
``ConflictError``. These are the functions the REST API calls.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from swiftmail_core import parent_rows
from swiftmail_core.ab_tests.variants import CONTENT_FIELDS, load_variants
from swiftmail_core.db import tenant_tx
from swiftmail_core.errors import ConflictError, NotFoundError, ValidationError
from swiftmail_core.models import Campaign, Message, utcnow
from swiftmail_core.sending import due_tenants, state
from swiftmail_core.sending.links import register_links

DRAFT, SCHEDULED, SENDING, PAUSED, SENT, CANCELLED = (
    "draft", "scheduled", "sending", "paused", "sent", "cancelled")

#: Which statuses each status may move to.
TRANSITIONS: Mapping[str, frozenset[str]] = {
    DRAFT: frozenset({SCHEDULED, CANCELLED}),
    SCHEDULED: frozenset({DRAFT, SCHEDULED, SENDING, CANCELLED}),
    SENDING: frozenset({PAUSED, SENT, CANCELLED}),
    PAUSED: frozenset({SENDING, CANCELLED}),
    SENT: frozenset({SENDING}),  # resend to failed
    CANCELLED: frozenset(),
}

#: Ledger statuses that still have work ahead of them ('waiting': the rest of an
#: A/B test's audience, until the winner is chosen).
PENDING_STATUSES = ("queued", "sending", "deferred", "waiting")
MAX_TEST_RECIPIENTS = 10


def _as_uuid(value: uuid.UUID | str, field: str) -> uuid.UUID:
    try:
        return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
    except ValueError as ex:
        raise ValidationError.for_field(field, "must be a UUID") from ex


def campaign_dict(campaign: Campaign) -> dict[str, Any]:
    """Return a campaign row as a plain dict."""
    return dict(campaign.__data__)


def _load(campaign_id: uuid.UUID) -> Campaign:
    campaign = Campaign.select().where(Campaign.id == campaign_id).first()
    if campaign is None:
        raise NotFoundError(f"no campaign {campaign_id}")
    return campaign


def _transition(
    campaign_id: uuid.UUID, allowed_from: Iterable[str], to: str, **changes: Any
) -> Campaign:
    """Move a campaign to ``to`` if its status is in ``allowed_from`` (caller holds tenant_tx)."""
    allowed = tuple(allowed_from)
    updated = (
        Campaign.update(status=to, updated_at=utcnow(), **changes)
        .where(Campaign.id == campaign_id, Campaign.status.in_(allowed))
        .execute()
    )
    campaign = _load(campaign_id)
    if not updated and campaign.status == SENT:
        raise ConflictError(
            f"campaign {campaign_id} has been sent, which is final: it cannot become {to}. "
            "A sent campaign is kept with its ledger and statistics; "
            "POST .../resend-failed sends again to the recipients that failed")
    if not updated and campaign.status == CANCELLED:
        raise ConflictError(
            f"campaign {campaign_id} is cancelled, which is final: it cannot become {to}; "
            "create a new campaign to send its content again")
    if not updated:
        raise ConflictError(
            f"campaign {campaign_id} is {campaign.status}; it can become {to} only from "
            f"{' or '.join(allowed)}"
        )
    return campaign


def _check_sendable(campaign: Campaign) -> None:
    """Refuse to schedule a campaign that could not be sent."""
    if not campaign.list_ids and not campaign.segment_ids:
        raise ValidationError.for_field("list_ids",
                                        "choose at least one list or segment to send to")
    if not campaign.from_email or "@" not in campaign.from_email:
        raise ValidationError.for_field("from_email", "set the sender address")
    if not campaign.template_id and not (campaign.html or campaign.text):
        raise ValidationError.for_field("html", "give html or text, or a template_id")
    if not campaign.template_id and not campaign.subject:
        raise ValidationError.for_field("subject", "give the campaign a subject")


def schedule_campaign(
    tenant_id: uuid.UUID | str,
    campaign_id: uuid.UUID | str,
    scheduled_at: datetime.datetime | None = None,
) -> dict[str, Any]:
    """Schedule a draft (or reschedule a scheduled) campaign; None means now."""
    campaign_uuid = _as_uuid(campaign_id, "campaign_id")
    when = scheduled_at or utcnow()
    if when.tzinfo is None:
        raise ValidationError.for_field("scheduled_at", "give a time zone (e.g. 2030-01-01T09:00Z)")
    with tenant_tx(tenant_id):
        _check_sendable(_load(campaign_uuid))
        campaign = _transition(campaign_uuid, (DRAFT, SCHEDULED), SCHEDULED, scheduled_at=when)
        return campaign_dict(campaign)


def unschedule_campaign(tenant_id: uuid.UUID | str, campaign_id: uuid.UUID | str) -> dict[str, Any]:
    """Return a scheduled campaign to draft before it starts."""
    campaign_uuid = _as_uuid(campaign_id, "campaign_id")
    with tenant_tx(tenant_id):
        return campaign_dict(_transition(campaign_uuid, (SCHEDULED,), DRAFT, scheduled_at=None))


def pause_campaign(tenant_id: uuid.UUID | str, campaign_id: uuid.UUID | str) -> dict[str, Any]:
    """Stop claiming a sending campaign's rows; messages in flight finish.

    An A/B test's waiting rows stay waiting (they are not due); a winner
    chosen while paused releases them as ``held``.
    """
    campaign_uuid = _as_uuid(campaign_id, "campaign_id")
    with tenant_tx(tenant_id) as database:
        campaign = _transition(campaign_uuid, (SENDING,), PAUSED)
        state.hold_campaign_rows(database, campaign.tenant_id, [campaign_uuid])
        return campaign_dict(campaign)


def resume_campaign(tenant_id: uuid.UUID | str, campaign_id: uuid.UUID | str) -> dict[str, Any]:
    """Continue a paused campaign exactly where it stopped."""
    campaign_uuid = _as_uuid(campaign_id, "campaign_id")
    with tenant_tx(tenant_id) as database:
        campaign = _transition(campaign_uuid, (PAUSED,), SENDING, paused_reason=None,
                               transport_failures=0)
        state.resume_campaign_rows(database, campaign.tenant_id, campaign_uuid)
        due_tenants.mark_due(database, campaign.tenant_id)
        return campaign_dict(campaign)


def cancel_campaign(tenant_id: uuid.UUID | str, campaign_id: uuid.UUID | str) -> dict[str, Any]:
    """Cancel a campaign: queued, deferred, held and waiting rows become cancelled."""
    campaign_uuid = _as_uuid(campaign_id, "campaign_id")
    with tenant_tx(tenant_id) as database:
        campaign = _transition(
            campaign_uuid, (DRAFT, SCHEDULED, SENDING, PAUSED), CANCELLED, finished_at=utcnow()
        )
        state.cancel_campaign_rows(database, campaign.tenant_id, campaign_uuid)
        return campaign_dict(campaign)


def _clean_addresses(emails: Iterable[str], field: str) -> list[str]:
    cleaned = []
    for index, email in enumerate(emails):
        value = str(email).strip()
        if "@" not in value or any(ch in value for ch in "\r\n\0 <>,") or len(value) > 254:
            raise ValidationError.for_field(f"{field}[{index}]", f"{value!r} is not an email address")
        cleaned.append(value)
    if not cleaned:
        raise ValidationError.for_field(field, "give at least one address")
    return cleaned


def test_send(
    tenant_id: uuid.UUID | str, campaign_id: uuid.UUID | str, emails: Iterable[str],
    variant: str | None = None,
) -> list[int]:
    """Queue the campaign to the given addresses as test messages; return ledger ids.

    A test address that is a contact is personalised with that contact's
    fields; any other gets an empty contact. Works in any campaign status.
    ``variant`` sends that A/B test variant's content (its rows record it).
    """
    campaign_uuid = _as_uuid(campaign_id, "campaign_id")
    addresses = _clean_addresses(emails, "emails")
    if len(addresses) > MAX_TEST_RECIPIENTS:
        raise ValidationError.for_field("emails", f"at most {MAX_TEST_RECIPIENTS} test addresses")
    with tenant_tx(tenant_id) as database:
        # NOTE: the tenant before the campaign, as `swiftmail tenant delete` locks
        # them (the tenant, then by cascade its campaigns): the ledger rows'
        # foreign key would lock it after the campaign, and the two deadlocked.
        parent_rows.lock_tenant_first(database, tenant_id)
        campaign = _load(campaign_uuid)
        # NOTE: stands in for the ledger's foreign key to campaigns (0189).
        if not parent_rows.lock_campaign(database, tenant_id, campaign_uuid):
            raise NotFoundError(f"no campaign {campaign_id}")
        content: dict[str, Any] = {}
        if campaign.template_id and not campaign.html:
            # NOTE: a draft's template is frozen only when the campaign starts;
            # a test send carries its own copy (workers never read templates).
            found = database.execute_sql(
                "SELECT subject, preheader, html, text FROM templates WHERE id = %s",
                (str(campaign.template_id),)).fetchone()
            if found:
                content = {"override": {
                    "subject": campaign.subject or found[0],
                    "preheader": campaign.preheader or found[1],
                    "html": found[2], "text": campaign.text or found[3]}}
        if variant is not None:
            chosen = load_variants(database, campaign.tenant_id, campaign_uuid).get(variant)
            if chosen is None:
                raise ValidationError.for_field("variant", f"the campaign has no variant {variant!r}")
            # NOTE: the variant's content travels with the row, like a template's does.
            content = {"override": {**content.get("override", {}), **{
                field: chosen[field] for field in CONTENT_FIELDS if chosen[field] is not None}}}
        if campaign.tracking_enabled:
            # A draft's links are registered when it starts; a test send needs them now.
            register_links(database, campaign.tenant_id, campaign_uuid,
                           content.get("override", {}).get("html") or campaign.html or "")
        ids = []
        for address in addresses:
            row = database.execute_sql(
                "INSERT INTO messages (tenant_id, campaign_id, contact_id, email, kind, transport, "
                "payload, variant) VALUES (%s, %s, %s, %s, 'test', %s, %s::jsonb, %s) "
                "RETURNING id",
                (str(campaign.tenant_id), str(campaign_uuid),
                 _contact_id(database, campaign.tenant_id, address), address,
                 campaign.transport, _json(content), variant),
            ).fetchone()
            ids.append(int(row[0]))
        due_tenants.mark_due(database, campaign.tenant_id)
        return ids


def resend_failed(tenant_id: uuid.UUID | str, campaign_id: uuid.UUID | str) -> int:
    """Queue a finished campaign's failed rows again; return how many.

    Bounced rows are not resent (their addresses are suppressed); rows whose
    address became suppressed since are skipped again at claim time.
    """
    campaign_uuid = _as_uuid(campaign_id, "campaign_id")
    with tenant_tx(tenant_id) as database:
        campaign = _load(campaign_uuid)
        if campaign.status != SENT:
            raise ConflictError(
                f"campaign {campaign_uuid} is {campaign.status}; resend to failed needs a sent campaign"
            )
        count = state.requeue_failed_rows(database, campaign.tenant_id, campaign_uuid)
        if count:
            _transition(campaign_uuid, (SENT,), SENDING, finished_at=None)
            due_tenants.mark_due(database, campaign.tenant_id)
        return count


def send_transactional(
    tenant_id: uuid.UUID | str,
    *,
    to: str,
    from_email: str,
    template_id: uuid.UUID | str | None = None,
    subject: str | None = None,
    html: str | None = None,
    text: str | None = None,
    data: Mapping[str, Any] | None = None,
    from_name: str = "",
    reply_to: str = "",
    transport: str = "relay",
) -> dict[str, Any]:
    """Queue one transactional message now; return its ledger row as a dict.

    Give either ``template_id`` or ``subject`` with ``html`` and/or ``text``.
    ``data`` is what the template sees as ``data``. The message goes through
    the same outbox, worker and transport as campaign mail.
    """
    (recipient,) = _clean_addresses([to], "to")
    (sender,) = _clean_addresses([from_email], "from_email")
    for field, value in (("subject", subject), ("from_name", from_name), ("reply_to", reply_to)):
        if value and any(ch in value for ch in "\r\n\0"):
            raise ValidationError.for_field(field, "must not contain CR, LF or NUL")
    if template_id is None and not subject:
        raise ValidationError.for_field("subject", "give a subject, or a template_id")
    if template_id is None and not (html or text):
        raise ValidationError.for_field("html", "give html or text, or a template_id")
    if data is not None and not isinstance(data, Mapping):
        raise ValidationError.for_field("data", "must be an object")
    payload = {
        "template_id": str(_as_uuid(template_id, "template_id")) if template_id else None,
        "subject": subject or "", "html": html or "", "text": text or "",
        "data": dict(data or {}), "from_email": sender, "from_name": from_name,
        "reply_to": reply_to,
    }
    with tenant_tx(tenant_id) as database:
        # NOTE: stands in for the ledger's foreign key to tenants (0197).
        if not parent_rows.lock_tenant_first(database, tenant_id):
            raise NotFoundError(f"no tenant {tenant_id}")
        if template_id is not None:
            found = database.execute_sql(
                "SELECT 1 FROM templates WHERE id = %s", (payload["template_id"],),
            ).fetchone()
            if not found:
                raise ValidationError.for_field("template_id", "no such template")
            # NOTE: snapshot the template: workers (system role) never read templates.
            subject_t, html_t, text_t = database.execute_sql(
                "SELECT subject, html, text FROM templates WHERE id = %s", (payload["template_id"],)
            ).fetchone()
            payload.update(subject=subject or subject_t, html=html or html_t, text=text or text_t)
        row = database.execute_sql(
            "INSERT INTO messages (tenant_id, contact_id, email, kind, transport, payload) "
            "VALUES (%s, %s, %s, 'transactional', %s, %s::jsonb) RETURNING id",
            (str(tenant_id), _contact_id(database, tenant_id, recipient), recipient, transport,
             _json(payload)),
        ).fetchone()
        due_tenants.mark_due(database, tenant_id)
        message = Message.select().where(Message.id == row[0]).get()
        return dict(message.__data__)


def _contact_id(database: Any, tenant_id: uuid.UUID | str, email: str) -> str | None:
    """Return the id of the tenant's contact with this address, if any.

    NOTE: a separate query, not a subquery of the INSERT: on Citus an INSERT
    with a subquery is planned as INSERT ... SELECT on the coordinator.
    """
    row = database.execute_sql(
        "SELECT id FROM contacts WHERE tenant_id = %s AND email_lower = lower(%s)",
        (str(tenant_id), email)).fetchone()
    return str(row[0]) if row else None


def _json(value: Any) -> str:
    return json.dumps(value, default=str)
