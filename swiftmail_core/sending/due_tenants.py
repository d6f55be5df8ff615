"""Which tenants have due mail: the small table claims start from.

The outbox is claimed tenant by tenant (``outbox.claim_batch``): on Citus a
row lock (``FOR UPDATE SKIP LOCKED``) works only in a single-shard query, and
a claim per tenant is also what makes sending fair. ``outbox_tenants`` holds
one row per tenant that may have due ledger rows, with ``due_at``, when its
earliest one is due. The rows are hints, never the truth (``messages`` is):

* a writer that queues mail calls ``mark_due`` in its own transaction;
* a claim that finds a tenant empty (or over its budget) moves or removes
  the tenant's row in the claim's transaction (``settle_within``);
* ``refresh`` rebuilds the hints from ``messages``; the scheduler tick runs
  it, and so does a claim round that found nothing, so mail queued by a path
  that gave no hint (or lost a race with a claim that emptied its tenant)
  waits one tick at most.

Reading the due tenants and ``refresh`` are the only cross-tenant statements
here; everything else names one tenant (a router query on Citus).
"""

from __future__ import annotations

import datetime
import uuid
from typing import Any

from swiftmail_core.db import system_tx

#: Ledger statuses a claim takes (the due set).
DUE_STATUSES = ("queued", "deferred")


def mark_due(database: Any, tenant_id: uuid.UUID | str,
             due_at: datetime.datetime | None = None) -> None:
    """Note in the caller's transaction that ``tenant_id`` has mail due at ``due_at`` (now).

    Cheap when the tenant is already due by then (one read, no write), so a
    busy tenant's writers do not queue up on its row.
    """
    tenant = str(tenant_id)
    found = database.execute_sql(
        "SELECT due_at <= coalesce(%s::timestamptz, now()) FROM outbox_tenants "
        "WHERE tenant_id = %s", (due_at, tenant)).fetchone()
    if found and found[0]:
        return
    database.execute_sql(
        "INSERT INTO outbox_tenants AS o (tenant_id, due_at) "
        "VALUES (%s, coalesce(%s::timestamptz, now())) ON CONFLICT (tenant_id) "
        "DO UPDATE SET due_at = least(o.due_at, EXCLUDED.due_at)", (tenant, due_at))


def due_now() -> list[str]:
    """Return the tenants whose hint says mail is due now, in tenant id order."""
    with system_tx() as database:
        rows = database.execute_sql(
            "/* cross-tenant */ SELECT tenant_id::text FROM outbox_tenants WHERE due_at <= now() "
            "ORDER BY tenant_id").fetchall()
    return [tenant for (tenant,) in rows]


def settle_within(database: Any, tenant_id: str, wait_seconds: float | None = None) -> None:
    """Move the tenant's hint to its next due row, or ``wait_seconds`` from now.

    Runs in the claim's transaction. Without ``wait_seconds`` (the claim
    found fewer due rows than it asked for) the hint moves to the tenant's
    earliest due row, or goes when there is none.
    """
    if wait_seconds is not None:
        database.execute_sql(
            "UPDATE outbox_tenants SET due_at = now() + make_interval(secs => %s) "
            "WHERE tenant_id = %s", (float(wait_seconds), tenant_id))
        return
    (next_due,) = database.execute_sql(
        "SELECT min(next_attempt_at) FROM messages WHERE tenant_id = %s "
        "AND status IN ('queued', 'deferred')", (tenant_id,)).fetchone()
    if next_due is None:
        database.execute_sql("DELETE FROM outbox_tenants WHERE tenant_id = %s", (tenant_id,))
    else:
        database.execute_sql("UPDATE outbox_tenants SET due_at = %s WHERE tenant_id = %s",
                             (next_due, tenant_id))


def refresh() -> int:
    """Add or bring forward the hint of every tenant with due rows; return how many changed.

    One cross-tenant aggregate over the due index (pushed down to each shard
    on Citus); hints of tenants without due rows are left to the claims.
    """
    with system_tx() as database:
        cursor = database.execute_sql(
            "/* cross-tenant */ INSERT INTO outbox_tenants AS o (tenant_id, due_at) "
            "SELECT m.tenant_id, min(m.next_attempt_at) FROM messages m "
            "WHERE m.status IN ('queued', 'deferred') AND m.next_attempt_at <= now() "
            "GROUP BY m.tenant_id "
            "ON CONFLICT (tenant_id) DO UPDATE SET due_at = EXCLUDED.due_at "
            "WHERE o.due_at > EXCLUDED.due_at")
        return int(cursor.rowcount)
