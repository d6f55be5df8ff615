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
from collections import defaultdict
from collections.abc import Iterable, Sequence
from typing import Any

from swiftmail_core.db import system_tx
from swiftmail_core.db.failover import retry_after_failover
from swiftmail_core.events import EventRecord, record_events
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending import state


def _by_tenant(rows: Iterable[Any]) -> dict[str, list[str]]:
    """Return the campaign rows' campaign ids by tenant."""
    found: dict[str, set[str]] = defaultdict(set)
    for row in rows:
        if row.kind == "campaign" and row.campaign_id is not None:
            found[str(row.tenant_id)].add(str(row.campaign_id))
    return {tenant: sorted(ids) for tenant, ids in sorted(found.items())}


def note_failure(rows: Sequence[Any], reason: str, *, threshold: int, immediate: bool = False,
                 plugins: PluginManager | None = None) -> set[uuid.UUID]:
    """Count a failed batch for its campaigns; pause those at the threshold; return them."""
    campaigns = _by_tenant(rows)
    if not campaigns:
        return set()
    paused: list[tuple[str, str]] = []
    with system_tx() as database:
        # NOTE: every statement names one tenant (a single-shard query on Citus).
        for tenant, ids in campaigns.items():
            counted = database.execute_sql(
                "UPDATE campaigns SET transport_failures = transport_failures + 1 "
                "WHERE tenant_id = %s AND id = ANY (%s::uuid[]) AND status = 'sending' "
                "RETURNING id::text, transport_failures", (tenant, ids)).fetchall()
            due = [campaign for campaign, failures in counted
                   if immediate or failures >= threshold]
            if not due:
                continue
            stopped = [campaign for (campaign,) in database.execute_sql(
                "UPDATE campaigns SET status = 'paused', paused_reason = %s, updated_at = now() "
                "WHERE tenant_id = %s AND id = ANY (%s::uuid[]) AND status = 'sending' "
                "RETURNING id::text", (reason[:500], tenant, due)).fetchall()]
            if stopped:
                state.hold_campaign_rows(database, tenant, stopped)
                paused.extend((tenant, campaign) for campaign in stopped)
    record_events([
        EventRecord(tenant_id=_uuid(tenant), type="campaign_paused", campaign_id=_uuid(campaign),
                    source_key=f"campaign_paused:{campaign}:{uuid.uuid4().hex}",
                    detail={"reason": reason[:500]})
        for tenant, campaign in paused], plugins)
    return {_uuid(campaign) for _, campaign in paused}


@retry_after_failover
def note_success(rows: Iterable[Any]) -> None:
    """Reset the failure count of the campaigns a batch went through for (safe to repeat)."""
    campaigns = _by_tenant(rows)
    if not campaigns:
        return
    with system_tx() as database:
        for tenant, ids in campaigns.items():
            database.execute_sql(
                "UPDATE campaigns SET transport_failures = 0 WHERE tenant_id = %s "
                "AND id = ANY (%s::uuid[]) AND transport_failures <> 0", (tenant, ids))


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))
