"""A campaign whose transport cannot be loaded or keeps failing is paused, visibly.

As listmonk does: rather than releasing the rows every minute forever, the
worker counts failed batches per campaign (``campaigns.transport_failures``);
at ``send_pause_after_failures`` in a row (at once when the transport cannot
even be loaded) the campaign is paused with ``paused_reason`` set, its due
rows are held, and a ``campaign_paused`` event tells the tenant (webhooks
included). A batch that goes through resets the count; resuming clears both.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable, Sequence
from typing import Any

from psycopg2.extras import execute_values

from swiftmail_core.db import system_tx
from swiftmail_core.events import EventRecord, record_events
from swiftmail_core.plugins import PluginManager


def note_failure(rows: Sequence[Any], reason: str, *, threshold: int, immediate: bool = False,
                 plugins: PluginManager | None = None) -> set[uuid.UUID]:
    """Count a failed batch for its campaigns; pause those at the threshold; return them."""
    campaigns = sorted({(str(r.tenant_id), str(r.campaign_id)) for r in rows
                        if r.kind == "campaign" and r.campaign_id is not None})
    if not campaigns:
        return set()
    with system_tx() as database:
        counted = execute_values(
            database.cursor(),
            "UPDATE campaigns c SET transport_failures = c.transport_failures + 1 "
            "FROM (VALUES %s) AS v (tenant_id, id) "
            "WHERE c.tenant_id = v.tenant_id::uuid AND c.id = v.id::uuid AND c.status = 'sending' "
            "RETURNING c.tenant_id::text, c.id::text, c.transport_failures",
            campaigns, fetch=True)
        due = [(tenant, campaign, reason[:500]) for tenant, campaign, failures in counted
               if immediate or failures >= threshold]
        if not due:
            return set()
        paused = execute_values(
            database.cursor(),
            "UPDATE campaigns c SET status = 'paused', paused_reason = v.reason, "
            "updated_at = now() FROM (VALUES %s) AS v (tenant_id, id, reason) "
            "WHERE c.tenant_id = v.tenant_id::uuid AND c.id = v.id::uuid AND c.status = 'sending' "
            "RETURNING c.tenant_id, c.id",
            due, fetch=True)
        execute_values(
            database.cursor(),
            "UPDATE messages m SET status = 'held', updated_at = now() "
            "FROM (VALUES %s) AS v (tenant_id, id) WHERE m.tenant_id = v.tenant_id::uuid "
            "AND m.campaign_id = v.id::uuid AND m.status IN ('queued', 'deferred')",
            [(str(t), str(c)) for t, c in paused])
    record_events([
        EventRecord(tenant_id=_uuid(tenant), type="campaign_paused", campaign_id=_uuid(campaign),
                    source_key=f"campaign_paused:{campaign}:{uuid.uuid4().hex}",
                    detail={"reason": reason[:500]})
        for tenant, campaign in paused], plugins)
    return {_uuid(campaign) for _, campaign in paused}


def note_success(rows: Iterable[Any]) -> None:
    """Reset the failure count of the campaigns a batch went through for."""
    campaigns = sorted({(str(r.tenant_id), str(r.campaign_id)) for r in rows
                        if r.kind == "campaign" and r.campaign_id is not None})
    if not campaigns:
        return
    with system_tx() as database:
        execute_values(
            database.cursor(),
            "UPDATE campaigns c SET transport_failures = 0 FROM (VALUES %s) AS v (tenant_id, id) "
            "WHERE c.tenant_id = v.tenant_id::uuid AND c.id = v.id::uuid "
            "AND c.transport_failures <> 0", campaigns)


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
