"""Apply delivery events reported by a provider's webhook to the ledger.

Transport plugins verify the provider's signature, map its events to
``ProviderEvent`` (with the tenant and ledger id they sent as custom
arguments) and call ``apply_provider_events``. It runs as the system role.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg2.extras import execute_values

from swiftmail_core.db import system_tx
from swiftmail_core.events import EventRecord, record_events
from swiftmail_core.models import utcnow
from swiftmail_core.plugins import PluginManager
from swiftmail_core.suppressions import SuppressionEntry, suppress

#: Ledger status each event type moves a row to (from a non-final status).
LEDGER_STATUS = {"delivered": "delivered", "bounced": "bounced", "expired": "expired"}
SUPPRESS_REASON = {"complained": "complaint", "unsubscribed": "unsubscribe"}


@dataclasses.dataclass(frozen=True)
class ProviderEvent:
    """One provider event, mapped to SwiftMail's vocabulary."""

    tenant_id: uuid.UUID
    ledger_id: int
    type: str
    email: str
    source_key: str
    occurred_at: datetime.datetime = dataclasses.field(default_factory=utcnow)
    bounce_class: str | None = None
    is_machine: bool = False
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def apply_provider_events(
    events: Sequence[ProviderEvent], plugins: PluginManager | None = None
) -> int:
    """Record events for rows that exist; update statuses and suppressions; return stored."""
    if not events:
        return 0
    keys = sorted({(str(e.tenant_id), e.ledger_id) for e in events})
    with system_tx() as database:
        rows = execute_values(
            database.cursor(),
            "SELECT m.tenant_id::text, m.id, lower(m.email), m.campaign_id, m.contact_id, m.kind "
            "FROM messages m JOIN (VALUES %s) AS v (tenant_id, id) "
            "ON m.tenant_id = v.tenant_id::uuid AND m.id = v.id",
            keys, fetch=True)
    # APPSEC: an event counts only for a ledger row of the tenant it names,
    # to the address that row was sent to; anything else is dropped.
    known = {(tenant, int(ledger_id)): (email, campaign, contact, kind)
             for tenant, ledger_id, email, campaign, contact, kind in rows}
    records, statuses, suppressions = [], [], []
    for event in events:
        row = known.get((str(event.tenant_id), event.ledger_id))
        if row is None or row[0] != event.email.lower():
            continue
        email, campaign_id, contact_id, kind = row
        records.append(EventRecord(
            tenant_id=event.tenant_id, type=event.type, occurred_at=event.occurred_at,
            message_id=event.ledger_id, campaign_id=campaign_id, contact_id=contact_id,
            email=email, bounce_class=event.bounce_class, is_machine=event.is_machine,
            source_key=event.source_key, detail=dict(event.detail)))
        if event.type in LEDGER_STATUS:
            statuses.append((str(event.tenant_id), event.ledger_id, LEDGER_STATUS[event.type]))
        reason = SUPPRESS_REASON.get(event.type)
        if event.type == "bounced" and event.bounce_class == "hard":
            reason = "hard_bounce"
        if reason and kind != "test":
            suppressions.append(SuppressionEntry(event.tenant_id, email, reason, source="provider"))
    if statuses:
        with system_tx() as database:
            execute_values(
                database.cursor(),
                "UPDATE messages m SET status = v.status, updated_at = now() "
                "FROM (VALUES %s) AS v (tenant_id, id, status) "
                "WHERE m.tenant_id = v.tenant_id::uuid AND m.id = v.id "
                "AND m.status IN ('accepted', 'deferred', 'sending', 'queued')",
                statuses)
    if suppressions:
        suppress(suppressions)
    return len(record_events(records, plugins))
