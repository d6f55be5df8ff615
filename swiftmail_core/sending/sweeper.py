"""Periodic machinery: start due campaigns, decide A/B tests, reclaim leases, finish.

Every function here is idempotent and safe to run from several workers at
once; together they make Redis disposable: whatever a flushed queue or a
killed worker dropped, the next tick finds again in PostgreSQL. Workers run
``tick`` through ``run_scheduled_tick``, which takes the one
``scheduler_ticks`` lease first: however many workers and hosts tick, the
periodic work (audience resolution included) runs once per
``worker_tick_seconds`` and never twice at once.
"""

from __future__ import annotations

import logging
import uuid
from typing import Any

from swiftmail_core.ab_tests.decision import decide_due_tests, release_decided
from swiftmail_core.ab_tests.variants import load_variants
from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.db.conflicts import retry_on_conflict
from swiftmail_core.jobs import JOBS
from swiftmail_core.journeys.enrollment import JOURNEYS
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending import due_tenants, state
from swiftmail_core.sending.audience import resolve_audience
from swiftmail_core.sending.links import register_links
from swiftmail_core.sending.state import Report, apply_reports
from swiftmail_core.settings import Settings
from swiftmail_core.webhooks.leases import WEBHOOKS
from swiftmail_core.webhooks.leases import reclaim_expired_leases as reclaim_webhook_leases

log = logging.getLogger(__name__)


def start_due_campaigns() -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Move due scheduled campaigns to sending; return (tenant_id, campaign_id) started.

    The conditional UPDATE is the guard: of two workers racing, only one
    sees the row still 'scheduled', so a campaign never starts twice.
    """
    with system_tx() as database:
        rows = database.execute_sql(
            "/* cross-tenant */ UPDATE campaigns SET status = 'sending', started_at = now(), "
            "updated_at = now() "
            "WHERE status = 'scheduled' AND scheduled_at <= now() RETURNING tenant_id, id"
        ).fetchall()
    return [(_uuid(t), _uuid(c)) for t, c in rows]


def _uuid(value: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


def unresolved_campaigns() -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Return sending campaigns whose ledger is not written yet (e.g. after a crash)."""
    with system_tx() as database:
        rows = database.execute_sql(
            "/* cross-tenant */ SELECT tenant_id, id FROM campaigns "
            "WHERE status IN ('sending', 'paused') AND audience_resolved_at IS NULL"
        ).fetchall()
    return [(_uuid(t), _uuid(c)) for t, c in rows]


def prepare_campaign(
    tenant_id: uuid.UUID, campaign_id: uuid.UUID, settings: Settings, plugins: PluginManager
) -> int:
    """Freeze the template, register tracked links and write the ledger; return its size."""
    with tenant_tx(tenant_id) as database:
        row = database.execute_sql(
            "SELECT c.template_id, c.html, t.subject, t.preheader, t.html, t.text "
            "FROM campaigns c LEFT JOIN templates t ON t.tenant_id = %s "
            "AND t.id = c.template_id WHERE c.tenant_id = %s AND c.id = %s",
            (str(tenant_id), str(tenant_id), str(campaign_id)),
        ).fetchone()
        if row and row[0] and not row[1]:
            # NOTE: the template is copied into the campaign when it starts, so
            # later template edits never change a campaign mid-send.
            database.execute_sql(
                "UPDATE campaigns SET subject = CASE WHEN subject = '' THEN %s ELSE subject END, "
                "preheader = CASE WHEN preheader = '' THEN %s ELSE preheader END, "
                "html = %s, text = CASE WHEN text = '' THEN %s ELSE text END WHERE id = %s",
                (row[2], row[3], row[4], row[5], str(campaign_id)),
            )
    _register_links(tenant_id, campaign_id)
    return resolve_audience(tenant_id, campaign_id)


def _register_links(tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> None:
    """Insert the tracked links of the campaign and of each A/B variant's HTML."""
    with tenant_tx(tenant_id) as database:
        row = database.execute_sql(
            "SELECT html, tracking_enabled FROM campaigns WHERE tenant_id = %s AND id = %s",
            (str(tenant_id), str(campaign_id))
        ).fetchone()
        if not row or not row[1]:
            return
        register_links(database, tenant_id, campaign_id, row[0] or "")
        for variant in load_variants(database, tenant_id, campaign_id).values():
            if variant["html"]:
                register_links(database, tenant_id, campaign_id, variant["html"])


def reclaim_expired_leases() -> int:
    """Put rows whose lease expired back in the queue; return how many.

    ``lease_owner`` is kept, so a slow worker's late answer still lands
    unless another worker has claimed the row since. A row of a campaign that
    was paused meanwhile waits as ``held``; one of a cancelled campaign ends
    ``cancelled`` (it used to go back to ``queued`` and stay there forever).
    """
    with system_tx() as database:
        return len(state.reclaim_expired_leases(database))


def expire_unknown_outcomes(after_hours: float, plugins: PluginManager | None = None,
                            *, batch_size: int = 1000) -> int:
    """End rows whose outcome stayed ``unknown`` longer than ``after_hours``; return how many.

    ``unknown`` means a request went out and its answer was lost; the
    provider's events normally settle it. When none came, the row ends
    ``expired`` through the state writer (with an ``expired`` event whose
    reason says so) instead of staying unknown for ever. The source key is
    per row, so two sweepers racing record one event.
    """
    with system_tx() as database:
        rows = database.execute_sql(
            "/* cross-tenant */ SELECT tenant_id, id FROM messages WHERE status = 'unknown' "
            "AND updated_at < now() - make_interval(secs => %s) ORDER BY updated_at LIMIT %s",
            (after_hours * 3600.0, batch_size)).fetchall()
    if not rows:
        return 0
    reason = (f"no answer and no provider event within {after_hours:g} hours: "
              "the outcome of this send is unknown")
    reports = [Report(tenant_id=_uuid(tenant), type="expired", ledger_id=int(ident),
                      source_key=f"unknown-expired:{ident}", reason=reason, source="sweeper")
               for tenant, ident in rows]
    applied = apply_reports(reports, plugins)
    return int(applied.statuses.get("expired", 0))


def complete_campaigns() -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Mark sending campaigns with no pending rows as sent; return them.

    An A/B test's ``waiting`` rows are pending: its campaign is not finished
    before the winner is chosen and they are sent.
    """
    with system_tx() as database:
        rows = database.execute_sql(
            "/* cross-tenant */ UPDATE campaigns c SET status = 'sent', finished_at = now(), updated_at = now() "
            "WHERE c.status = 'sending' AND c.audience_resolved_at IS NOT NULL "
            "AND NOT EXISTS (SELECT 1 FROM messages m WHERE m.tenant_id = c.tenant_id "
            "AND m.campaign_id = c.id AND m.kind = 'campaign' "
            "AND m.status IN ('queued', 'sending', 'deferred', 'waiting')) "
            "RETURNING c.tenant_id, c.id"
        ).fetchall()
    return [(_uuid(t), _uuid(c)) for t, c in rows]


@retry_on_conflict
def has_due_work() -> bool:
    """Return True when some ledger row is due now (cheap: the due index).

    A read of every shard: retried when a tenant's shards move under it.
    """
    with system_tx() as database:
        return database.execute_sql(
            "/* cross-tenant */ SELECT EXISTS (SELECT 1 FROM messages WHERE status IN ('queued', 'deferred') "
            "AND next_attempt_at <= now())"
        ).fetchone()[0]


SCHEDULER = "sending"
#: How long one scheduler run may hold the lease before another worker may take over.
TICK_LEASE_SECONDS = 600


def claim_tick(owner: str, interval_seconds: float, *, name: str = SCHEDULER) -> bool:
    """Take the cluster-wide scheduler lease if a tick is due and none is running."""
    with system_tx() as database:
        row = database.execute_sql(
            "UPDATE scheduler_ticks SET lease_until = now() + make_interval(secs => %s), "
            "ticked_by = %s WHERE name = %s "
            "AND ticked_at <= now() - make_interval(secs => %s) "
            "AND (lease_until IS NULL OR lease_until < now()) RETURNING 1",
            (TICK_LEASE_SECONDS, owner, name, max(0.0, interval_seconds * 0.9))).fetchone()
    return row is not None


def finish_tick(owner: str, *, name: str = SCHEDULER) -> None:
    """Record the tick as done and give the lease back."""
    with system_tx() as database:
        database.execute_sql(
            "UPDATE scheduler_ticks SET ticked_at = now(), lease_until = NULL "
            "WHERE name = %s AND ticked_by = %s", (name, owner))


def run_scheduled_tick(settings: Settings, plugins: PluginManager,
                       owner: str) -> dict[str, int] | None:
    """Run ``tick`` if this worker wins this tick cluster-wide; None when another did."""
    if not claim_tick(owner, settings.worker_tick_seconds):
        return None
    try:
        return tick(settings, plugins)
    finally:
        finish_tick(owner)


def tick(settings: Settings, plugins: PluginManager) -> dict[str, int]:
    """Run one round of the periodic machinery; return what it did."""
    started = start_due_campaigns()
    resolved = 0
    for tenant_id, campaign_id in unresolved_campaigns():
        try:
            resolved += prepare_campaign(tenant_id, campaign_id, settings, plugins)
        except Exception:
            log.exception("preparing campaign %s failed; the next tick retries", campaign_id)
    decided = decide_due_tests()
    released = release_decided()
    reclaimed = reclaim_expired_leases()
    webhook_reclaimed = reclaim_webhook_leases()
    expired_unknown = expire_unknown_outcomes(settings.send_unknown_outcome_hours, plugins)
    # Reclaimed rows, and work queued by any path that left no hint, get one here.
    hinted = sum(queue.refresh() for queue in (due_tenants.OUTBOX, JOBS, WEBHOOKS, JOURNEYS))
    finished = complete_campaigns()
    partitions = maintain_event_partitions()
    return {"started": len(started), "resolved": resolved, "ab_decided": len(decided),
            "ab_released": released,
            "reclaimed": reclaimed,
            "webhook_reclaimed": webhook_reclaimed, "expired_unknown": expired_unknown,
            "due_tenants": hinted, "finished": len(finished), "event_partitions": partitions}


def maintain_event_partitions(months_ahead: int = 3) -> int:
    """Create event partitions months ahead (moving rows stranded in the default one)."""
    with system_tx() as database:
        return int(database.execute_sql("/* cross-tenant */ SELECT swiftmail_ensure_event_partitions(%s)",
                                        (months_ahead,)).fetchone()[0])
