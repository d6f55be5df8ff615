"""Which tenants have due work, per queue: the small table every cross-tenant claim starts from.

Background work is claimed tenant by tenant: on Citus a row lock (``FOR
UPDATE SKIP LOCKED``) works only in a single-shard query, and a claim per
tenant is also what makes the work fair (one tenant's million-message
campaign or hundred imports cannot starve another's). ``due_tenants`` holds
one row per (tenant, queue) that may have due work, with ``due_at``, when
its earliest item is due. A ``DueQueue`` is one kind of work: the outbox
(``sending.due_tenants.OUTBOX``), import/export jobs (``jobs.JOBS``),
webhook deliveries (``webhooks.leases.WEBHOOKS``) and journey steps
(``journeys.runner.JOURNEYS``). The rows are hints, never the truth (the
work's own table is):

* a writer that queues work calls ``mark_due`` in its own transaction;
* a claim that finds a tenant empty (or blocked) moves or removes the
  tenant's row in the claim's transaction (``settle_within``; the outbox's
  claim, one SQL function, ``swiftmail_claim_tenant``, does the same inside);
* ``refresh`` rebuilds a queue's hints from its table; the scheduler tick
  runs it, and so does a claim round that found nothing, so work queued by a
  path that gave no hint (or lost a race with a claim that emptied its
  tenant) waits one tick at most.

``claim_fairly`` is the claim round: each due tenant gets an equal share of
the batch, starting after the tenant served last, then spare room goes to
tenants with more. Reading the due tenants and ``refresh`` are the only
cross-tenant statements here; everything else names one tenant (a router
query on Citus).
"""

from __future__ import annotations

import bisect
import dataclasses
import datetime
import math
import threading
import uuid
from collections.abc import Callable, Sequence
from typing import Any, TypeVar

from swiftmail_core.db import system_db, system_tx
from swiftmail_core.errors import TenantIsolationError

T = TypeVar("T")
#: Claims one tenant: (tenant id, how many at most) -> (claimed, whether it has more).
TenantClaim = Callable[[str, int], tuple[list[T], bool]]


class _Rotation:
    """Where the next claim round starts: just after the tenant served last."""

    def __init__(self) -> None:
        self._last = ""
        self._lock = threading.Lock()

    def order(self, tenants: Sequence[str]) -> list[str]:
        """Return ``tenants`` (sorted) starting after the one served last."""
        with self._lock:
            cut = bisect.bisect_right(tenants, self._last)
        return [*tenants[cut:], *tenants[:cut]]

    def served(self, tenant: str) -> None:
        """Remember ``tenant`` as served last."""
        with self._lock:
            self._last = tenant


@dataclasses.dataclass
class DueQueue:
    """One kind of claimable work and how to tell when a tenant has some due.

    ``due_sql`` selects ``(tenant_id, due_at)`` of every tenant with work due
    now (cross-tenant, grouped by tenant); ``next_due_sql`` selects one
    tenant's earliest due time (``%(tenant)s``, and any ``params`` the
    claim passes to ``settle_within``), NULL when it has none.
    """

    name: str
    due_sql: str
    next_due_sql: str
    rotation: _Rotation = dataclasses.field(default_factory=_Rotation, repr=False)

    def mark_due(self, database: Any, tenant_id: uuid.UUID | str,
                 due_at: datetime.datetime | None = None) -> None:
        """Note in the caller's transaction that ``tenant_id`` has work due at ``due_at`` (now).

        Cheap when the tenant is already due by then (one read, no write), so
        a busy tenant's writers do not queue up on its row.
        """
        tenant = str(tenant_id)
        found = database.execute_sql(
            "SELECT due_at <= coalesce(%s::timestamptz, now()) FROM due_tenants "
            "WHERE tenant_id = %s AND queue = %s", (due_at, tenant, self.name)).fetchone()
        if found and found[0]:
            return
        database.execute_sql(
            "INSERT INTO due_tenants AS o (tenant_id, queue, due_at) "
            "VALUES (%s, %s, coalesce(%s::timestamptz, now())) ON CONFLICT (tenant_id, queue) "
            "DO UPDATE SET due_at = least(o.due_at, EXCLUDED.due_at)", (tenant, self.name, due_at))

    def due_now(self) -> list[str]:
        """Return the tenants whose hint says work is due now, in tenant id order.

        One read on its own, outside a transaction block: on Citus the
        statement reads every shard, and without BEGIN/COMMIT it costs no
        commit round trip to each worker.
        """
        if system_db.in_transaction():
            raise TenantIsolationError("due_now reads on its own: call it outermost")
        with system_db.connection_context():
            rows = system_db.execute_sql(
                "/* cross-tenant */ SELECT tenant_id::text FROM due_tenants "
                "WHERE queue = %s AND due_at <= now() ORDER BY tenant_id", (self.name,)).fetchall()
        return [tenant for (tenant,) in rows]

    def settle_within(self, database: Any, tenant_id: str,
                      wait_seconds: float | None = None, *,
                      params: dict[str, Any] | None = None) -> None:
        """Move the tenant's hint to its next due item, or ``wait_seconds`` from now.

        Runs in the claim's transaction. Without ``wait_seconds`` (the claim
        found fewer due items than it asked for) the hint moves to the
        tenant's earliest due item, or goes when there is none; ``params``
        are more values ``next_due_sql`` names (e.g. a concurrency limit).
        """
        if wait_seconds is not None:
            database.execute_sql(
                "UPDATE due_tenants SET due_at = now() + make_interval(secs => %s) "
                "WHERE tenant_id = %s AND queue = %s", (float(wait_seconds), tenant_id, self.name))
            return
        (next_due,) = database.execute_sql(
            self.next_due_sql, {**(params or {}), "tenant": tenant_id}).fetchone()
        if next_due is None:
            database.execute_sql("DELETE FROM due_tenants WHERE tenant_id = %s AND queue = %s",
                                 (tenant_id, self.name))
        else:
            database.execute_sql(
                "UPDATE due_tenants SET due_at = %s WHERE tenant_id = %s AND queue = %s",
                (next_due, tenant_id, self.name))

    def refresh(self) -> int:
        """Add or bring forward the hint of every tenant with due work; return how many changed.

        One cross-tenant aggregate grouped by tenant (pushed down to each
        shard on Citus); hints of tenants without due work are left to the
        claims.
        """
        with system_tx() as database:
            cursor = database.execute_sql(
                "/* cross-tenant */ INSERT INTO due_tenants AS o (tenant_id, queue, due_at) "
                f"SELECT d.tenant_id, %s, d.due_at FROM ({self.due_sql}) d (tenant_id, due_at) "
                "ON CONFLICT (tenant_id, queue) DO UPDATE SET due_at = EXCLUDED.due_at "
                "WHERE o.due_at > EXCLUDED.due_at", (self.name,))
            return int(cursor.rowcount)

    def claim_fairly(self, limit: int, claim_tenant: TenantClaim[T]) -> list[T]:
        """Claim up to ``limit`` items tenant by tenant, fairly; return them.

        Each due tenant gets an equal share, starting after the tenant served
        last; room they leave goes to tenants with more. ``claim_tenant`` runs
        one tenant's claim in its own transaction and calls ``settle_within``
        there when the tenant has no more. A round that found nothing rebuilds
        the hints once and tries again.
        """
        claimed = self._round(limit, claim_tenant)
        if not claimed and self.refresh():
            claimed = self._round(limit, claim_tenant)
        return claimed

    def _round(self, limit: int, claim_tenant: TenantClaim[T]) -> list[T]:
        tenants = self.rotation.order(self.due_now())
        if not tenants or limit <= 0:
            return []
        share = max(1, math.ceil(limit / len(tenants)))
        claimed: list[T] = []
        busy: list[str] = []
        for tenant in tenants:
            room = limit - len(claimed)
            if room <= 0:
                break
            got, more = claim_tenant(tenant, min(share, room))
            self.rotation.served(tenant)
            claimed.extend(got)
            if more:
                busy.append(tenant)
        for tenant in busy:
            room = limit - len(claimed)
            if room <= 0:
                break
            claimed.extend(claim_tenant(tenant, room)[0])
        return claimed
