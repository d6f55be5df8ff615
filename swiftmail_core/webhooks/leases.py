"""Claiming webhook deliveries exactly once: leases, lease tokens, reclaim.

A claim moves a due ``pending`` delivery to ``delivering`` with a lease
(``lease_expires_at``) and a fresh ``lease_token``. Whoever records the
attempt's result must present that token (``AND lease_token = ...``), so a
deliverer whose lease expired and was reclaimed can no longer write. The
sweeper's ``reclaim_expired_leases`` puts expired claims back to ``pending``.

Claims go tenant by tenant (the due-tenant hints, queue ``webhooks``: a row
lock works only in a single-shard query on Citus, and it keeps tenants fair).
Endpoint isolation: a claim first locks the tenant's webhooks that have due
work and are not paused (``FOR UPDATE SKIP LOCKED``), oldest due first, so two
deliverers never claim for the same webhook at the same moment; then it
counts that webhook's deliveries in flight and claims at most
``endpoint_concurrency`` minus those.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import time
import uuid

from swiftmail_core.db import system_tx
from swiftmail_core.due_tenants import DueQueue

#: What the delivery log says about an attempt whose deliverer lost its lease.
LEASE_EXPIRED = "lease expired before the attempt was recorded: outcome unknown"


@dataclasses.dataclass(frozen=True)
class Claimed:
    """A delivery claimed for one attempt, with what is needed to send it."""

    tenant_id: uuid.UUID
    delivery_id: int
    webhook_id: uuid.UUID
    url: str
    secret_encrypted: bytes
    payload: dict
    attempts: int
    created_at: datetime.datetime
    lease_token: str = ""
    #: ``time.monotonic()`` at which this process considers the lease gone.
    lease_deadline: float = float("inf")

    @property
    def endpoint(self) -> tuple[uuid.UUID, uuid.UUID]:
        """Return the (tenant, webhook) this delivery goes to."""
        return (self.tenant_id, self.webhook_id)


def _uuid(value: object) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(str(value))


#: Tenants with deliveries due to webhooks that are not paused (a disabled
#: webhook's deliveries are due too: the claim abandons them) and have none in
#: flight: a busy webhook's tenant is hinted by the claim (``next_due_sql``,
#: at the earliest lease end when the webhook is at its concurrency limit) and
#: again when a slot frees (a result recorded, a claim released); the sweeper
#: reclaims an expired lease before it refreshes.
WEBHOOKS = DueQueue(
    "webhooks",
    due_sql="SELECT d.tenant_id, min(d.next_attempt_at) FROM webhook_deliveries d "
            "JOIN webhooks w ON w.tenant_id = d.tenant_id AND w.id = d.webhook_id "
            "WHERE d.status = 'pending' AND d.next_attempt_at <= now() "
            "AND (NOT w.enabled OR w.paused_until IS NULL OR w.paused_until <= now()) "
            "AND NOT EXISTS (SELECT 1 FROM webhook_deliveries b "
            "  WHERE b.tenant_id = d.tenant_id AND b.webhook_id = d.webhook_id "
            "  AND b.status = 'delivering') "
            "GROUP BY d.tenant_id",
    # An enabled webhook with %(cap)s deliveries in flight is due again when
    # its first lease ends (or a slot frees earlier and hints it).
    next_due_sql="SELECT min(CASE WHEN p.enabled AND b.n >= %(cap)s "
                 "THEN greatest(p.due, b.lease_end) ELSE p.due END) "
                 "FROM (SELECT d.webhook_id, w.enabled, min(greatest(d.next_attempt_at, "
                 "  CASE WHEN w.enabled THEN w.paused_until END)) AS due "
                 "  FROM webhook_deliveries d JOIN webhooks w "
                 "  ON w.tenant_id = d.tenant_id AND w.id = d.webhook_id "
                 "  WHERE d.tenant_id = %(tenant)s AND w.tenant_id = %(tenant)s "
                 "  AND d.status = 'pending' GROUP BY d.webhook_id, w.enabled) p "
                 "LEFT JOIN (SELECT webhook_id, count(*) AS n, min(lease_expires_at) AS lease_end "
                 "  FROM webhook_deliveries WHERE tenant_id = %(tenant)s "
                 "  AND status = 'delivering' GROUP BY webhook_id) b "
                 "ON b.webhook_id = p.webhook_id",
)


def claim_due(
    limit: int,
    *,
    lease: datetime.timedelta,
    endpoint_concurrency: int,
    tenant_id: uuid.UUID | None = None,
) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries, at most ``endpoint_concurrency`` per webhook.

    Tenant by tenant (fairly, through the due-tenant hints), or only
    ``tenant_id``'s. Deliveries of a disabled webhook are abandoned instead
    of claimed.
    """
    if limit <= 0:
        return []
    started = time.monotonic()

    def claim_tenant(tenant: str, room: int) -> tuple[list[tuple], bool]:
        return _claim_tenant(tenant, room, lease, endpoint_concurrency)

    if tenant_id is not None:
        rows = claim_tenant(str(tenant_id), limit)[0]
    else:
        rows = WEBHOOKS.claim_fairly(limit, claim_tenant)
    # The local deadline starts before the database's, so it always ends first.
    deadline = started + lease.total_seconds()
    claimed = [
        Claimed(_uuid(r[0]), r[1], _uuid(r[2]), r[3], bytes(r[4]),
                r[5] if isinstance(r[5], dict) else json.loads(r[5]), r[6], r[7],
                str(r[8]), deadline)
        for r in rows
    ]
    return sorted(claimed, key=lambda item: item.delivery_id)


def _claim_tenant(tenant: str, limit: int, lease: datetime.timedelta,
                  endpoint_concurrency: int) -> tuple[list[tuple], bool]:
    """Lease up to ``limit`` of one tenant's due deliveries; return rows and whether it has more.

    Every statement names the tenant (a single-shard transaction on Citus).
    """
    with system_tx() as database:
        endpoints = database.execute_sql(
            "SELECT w.id, w.enabled FROM webhooks w "
            "WHERE w.tenant_id = %(tenant)s "
            "AND (NOT w.enabled OR w.paused_until IS NULL OR w.paused_until <= now()) "
            "AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.tenant_id = %(tenant)s "
            "  AND d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= now()) "
            "ORDER BY (SELECT min(d.next_attempt_at) FROM webhook_deliveries d "
            "  WHERE d.tenant_id = %(tenant)s AND d.webhook_id = w.id "
            "  AND d.status = 'pending') "
            "LIMIT %(limit)s FOR UPDATE OF w SKIP LOCKED",
            {"tenant": tenant, "limit": limit},
        ).fetchall()
        disabled = [str(w) for w, enabled in endpoints if not enabled]
        enabled = [str(w) for w, on in endpoints if on]
        for webhook in disabled:
            database.execute_sql(
                "UPDATE webhook_deliveries SET status = 'abandoned', "
                "response_excerpt = 'webhook disabled', updated_at = now() "
                "WHERE tenant_id = %s AND webhook_id = %s AND status = 'pending'",
                (tenant, webhook),
            )
        rows: list[tuple] = []
        if enabled:
            # NOTE: one fresh lease token per claim (Citus refuses a volatile
            # gen_random_uuid() in an UPDATE): a reclaimed delivery gets another.
            # NOTE: a new statement, so in-flight counts include claims that other
            # deliverers committed before this one locked the webhooks.
            rows = database.execute_sql(
                "WITH candidates AS (SELECT p.id, p.next_attempt_at "
                "  FROM unnest(%(hooks)s::uuid[]) AS l (webhook_id) "
                "  CROSS JOIN LATERAL (SELECT count(*) AS n FROM webhook_deliveries b "
                "    WHERE b.tenant_id = %(tenant)s AND b.webhook_id = l.webhook_id "
                "    AND b.status = 'delivering') busy "
                "  CROSS JOIN LATERAL (SELECT d.id, d.next_attempt_at "
                "    FROM webhook_deliveries d WHERE d.tenant_id = %(tenant)s "
                "    AND d.webhook_id = l.webhook_id AND d.status = 'pending' "
                "    AND d.next_attempt_at <= now() ORDER BY d.next_attempt_at, d.id "
                "    LIMIT greatest(%(cap)s - busy.n, 0)) p), "
                "due AS (SELECT d.id FROM webhook_deliveries d JOIN candidates c "
                "  ON d.tenant_id = %(tenant)s AND c.id = d.id WHERE d.tenant_id = %(tenant)s "
                "  AND d.status = 'pending' "
                "  ORDER BY c.next_attempt_at, d.id LIMIT %(limit)s FOR UPDATE OF d SKIP LOCKED) "
                "UPDATE webhook_deliveries d SET status = 'delivering', "
                "lease_token = %(token)s, lease_expires_at = now() + %(lease)s, "
                "updated_at = now() FROM due, webhooks w "
                "WHERE d.tenant_id = %(tenant)s AND d.id = due.id "
                "AND w.tenant_id = %(tenant)s AND w.id = d.webhook_id "
                "RETURNING d.tenant_id, d.id, d.webhook_id, w.url, w.secret_encrypted, "
                "d.payload, d.attempts, d.created_at, d.lease_token",
                {"tenant": tenant, "hooks": enabled, "cap": endpoint_concurrency,
                 "limit": limit, "lease": lease, "token": str(uuid.uuid4())},
            ).fetchall()
        more = len(rows) == limit
        if not more:
            WEBHOOKS.settle_within(database, tenant, params={"cap": endpoint_concurrency})
    return [tuple(row) for row in rows], more


def slot_freed(database: object, tenant: str, webhook: str) -> None:
    """Hint the tenant at the webhook's next pending delivery, in the caller's transaction.

    Called when a delivery's result is recorded: a webhook that was at its
    concurrency limit has a slot again, and its tenant's hint may have been
    moved past the slot's lease end by an earlier claim.
    """
    (due,) = database.execute_sql(  # type: ignore[attr-defined]
        "SELECT min(greatest(d.next_attempt_at, CASE WHEN w.enabled THEN w.paused_until END)) "
        "FROM webhook_deliveries d JOIN webhooks w "
        "ON w.tenant_id = d.tenant_id AND w.id = d.webhook_id "
        "WHERE d.tenant_id = %s AND w.tenant_id = %s AND d.webhook_id = %s "
        "AND d.status = 'pending'", (tenant, tenant, webhook)).fetchone()
    if due is not None:
        WEBHOOKS.mark_due(database, tenant, due)


def release(claimed: Claimed, not_before: datetime.datetime | None = None) -> bool:
    """Give a claim back unattempted (no attempt counted); False if the lease was lost."""
    with system_tx() as database:
        # NOTE: now() read once: Citus refuses a non-immutable function inside COALESCE.
        (now,) = database.execute_sql("SELECT now()").fetchone()
        cursor = database.execute_sql(
            "UPDATE webhook_deliveries SET status = 'pending', lease_token = NULL, "
            "lease_expires_at = NULL, next_attempt_at = greatest(next_attempt_at, %s), "
            "updated_at = now() "
            "WHERE tenant_id = %s AND id = %s AND status = 'delivering' AND lease_token = %s",
            (not_before or now, str(claimed.tenant_id), claimed.delivery_id,
             claimed.lease_token),
        )
        if cursor.rowcount != 1:
            return False
        WEBHOOKS.mark_due(database, claimed.tenant_id, not_before)
        return True


def reclaim_expired_leases() -> int:
    """Put deliveries whose lease expired back to ``pending``; return how many.

    The lost attempt counts (its POST may have gone out) and the log says its
    outcome is unknown; the token is cleared, so the late deliverer's result
    is refused.
    """
    with system_tx() as database:
        cursor = database.execute_sql(
            "/* cross-tenant */ UPDATE webhook_deliveries SET status = 'pending', "
            "attempts = attempts + 1, "
            "lease_token = NULL, lease_expires_at = NULL, next_attempt_at = now(), "
            "response_status = NULL, response_excerpt = %s, updated_at = now() "
            "WHERE status = 'delivering' AND lease_expires_at < now()",
            (LEASE_EXPIRED,),
        )
        return int(cursor.rowcount)
