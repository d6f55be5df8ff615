"""Queueing webhook deliveries for stored events.

Kept apart from the dispatcher so ``record_events`` can queue deliveries in
the very transaction that stores the events.
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

from psycopg2.extras import execute_values

from swiftmail_core.db import system_tx
from swiftmail_core.timestamps import rfc3339
from swiftmail_core.tracking import TrackingEvent
from swiftmail_core.webhooks.leases import WEBHOOKS

if TYPE_CHECKING:
    from swiftmail_core.events import EventRecord

    #: What a delivery is built from: an event before or after ``to_tracking_event``.
    QueuedEvent: TypeAlias = TrackingEvent | EventRecord


def event_payload(event: QueuedEvent) -> dict:
    """Return the JSON body of a webhook delivery for ``event``."""
    return {
        "id": str(uuid.uuid4()),
        "type": event.type,
        "occurred_at": rfc3339(event.occurred_at),
        "tenant_id": str(event.tenant_id),
        "campaign_id": str(event.campaign_id) if event.campaign_id else None,
        "contact_id": str(event.contact_id) if event.contact_id else None,
        "message_id": event.message_id,
        "email": event.email,
        "link_id": event.link_id,
        "bounce_class": event.bounce_class,
        "is_machine": event.is_machine,
        "detail": {k: v for k, v in dict(event.detail).items() if k != "email"},
    }


def enqueue(events: Sequence[TrackingEvent]) -> int:
    """Create a pending delivery per event for each enabled webhook wanting it."""
    if not events:
        return 0
    with system_tx() as database:
        return enqueue_within(database, events)


def enqueue_within(database: Any, events: Sequence[QueuedEvent]) -> int:
    """Queue deliveries inside the caller's system transaction.

    ``record_events`` calls this in the transaction that stores the events, so
    an event is never committed without the deliveries it owes its webhooks.
    """
    events = [event for event in events if event.type != "webhook_disabled"]
    if not events:
        return 0
    tenants = sorted({str(tenant) for tenant in {event.tenant_id for event in events}})
    hooks = database.execute_sql(
        "SELECT tenant_id::text, id, event_types FROM webhooks "
        "WHERE enabled AND tenant_id = ANY(%s::uuid[])", (tenants,),
    ).fetchall()
    if not hooks:
        return 0
    rows = []
    for event in events:
        for tenant, webhook_id, types in hooks:
            if tenant == str(event.tenant_id) and (not types or event.type in types):
                rows.append((tenant, str(webhook_id), event.type,
                             json.dumps(event_payload(event))))
    if rows:
        execute_values(
            database.cursor(),
            # NOTE: a plain multi-row VALUES insert: Citus runs INSERT ... SELECT
            # FROM VALUES as a COPY into the shards, which row-level security refuses.
            "INSERT INTO webhook_deliveries (tenant_id, webhook_id, event_type, payload) "
            "VALUES %s",
            rows, template="(%s::uuid, %s::uuid, %s, %s::jsonb)",
        )
        for tenant in sorted({row[0] for row in rows}):
            WEBHOOKS.mark_due(database, tenant)  # deliverers start from the due tenants
    return len(rows)
