"""Delivery outcomes back to the platform: ledger row, events, suppressions.

Each outcome updates the message's ledger row (final states only: the relay
never writes ``deferred`` to the row, which would make the sending pipeline
claim it again), records an event through ``swiftmail_core.events`` (system
role, idempotent by ``source_key``, rollups, tracking hook) and, for hard
bounces and complaints, adds the address to the tenant's suppression list.
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

LEDGER_STATUS = {"delivered": "delivered", "bounced": "bounced", "expired": "expired"}
SUPPRESS_REASON = {"complained": "complaint"}


@dataclasses.dataclass(frozen=True)
class Outcome:
    """What happened to one recipient of one message."""

    tenant_id: uuid.UUID
    type: str  # delivered, deferred, bounced, expired, complained
    email: str
    source_key: str
    ledger_id: int | None = None
    bounce_class: str | None = None
    reply: str = ""
    occurred_at: datetime.datetime = dataclasses.field(default_factory=utcnow)
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)


def _update_ledger(outcomes: Sequence[Outcome]) -> dict[tuple[str, int], tuple[Any, Any]]:
    """Apply outcomes to ledger rows; return (tenant, id) -> (campaign_id, contact_id)."""
    rows = [
        (str(o.tenant_id), o.ledger_id, LEDGER_STATUS.get(o.type), o.reply[:1000] or None,
         o.occurred_at if o.type == "delivered" else None)
        for o in outcomes if o.ledger_id is not None
    ]
    if not rows:
        return {}
    with system_tx() as database:
        found = execute_values(
            database.cursor(),
            "UPDATE messages SET status = COALESCE(v.status, messages.status), "
            "last_error = COALESCE(v.last_error, messages.last_error), "
            "sent_at = COALESCE(v.sent_at::timestamptz, messages.sent_at), updated_at = now() "
            "FROM (VALUES %s) AS v (tenant_id, id, status, last_error, sent_at) "
            "WHERE messages.tenant_id = v.tenant_id::uuid AND messages.id = v.id::bigint "
            "RETURNING messages.tenant_id, messages.id, messages.campaign_id, messages.contact_id",
            rows,
            fetch=True,
        )
    return {(str(tenant), int(ident)): (campaign, contact) for tenant, ident, campaign, contact in found}


def record_outcomes(outcomes: Sequence[Outcome], plugins: PluginManager | None = None) -> None:
    """Write outcomes to the ledger, events and suppressions (idempotent)."""
    if not outcomes:
        return
    ledger = _update_ledger(outcomes)
    events = []
    for outcome in outcomes:
        campaign_id, contact_id = ledger.get((str(outcome.tenant_id), outcome.ledger_id or 0),
                                             (None, None))
        events.append(EventRecord(
            tenant_id=outcome.tenant_id, type=outcome.type, occurred_at=outcome.occurred_at,
            message_id=outcome.ledger_id if outcome.ledger_id in {k[1] for k in ledger} else None,
            campaign_id=uuid.UUID(str(campaign_id)) if campaign_id else None,
            contact_id=uuid.UUID(str(contact_id)) if contact_id else None,
            email=outcome.email, bounce_class=outcome.bounce_class, source_key=outcome.source_key,
            detail={"reply": outcome.reply, **outcome.detail},
        ))
    record_events(events, plugins)
    suppressions = [
        SuppressionEntry(
            tenant_id=o.tenant_id, email=o.email,
            reason="hard_bounce" if o.type == "bounced" else SUPPRESS_REASON[o.type],
            source="relay", detail=o.reply,
        )
        for o in outcomes
        if (o.type == "bounced" and o.bounce_class == "hard") or o.type in SUPPRESS_REASON
    ]
    suppress(suppressions)
