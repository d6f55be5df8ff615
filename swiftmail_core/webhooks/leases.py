"""Claiming webhook deliveries exactly once: leases, lease tokens, reclaim.

A claim moves a due ``pending`` delivery to ``delivering`` with a lease
(``lease_expires_at``) and a fresh ``lease_token``. Whoever records the
attempt's result must present that token (``AND lease_token = ...``), so a
deliverer whose lease expired and was reclaimed can no longer write. The
sweeper's ``reclaim_expired_leases`` puts expired claims back to ``pending``.

Endpoint isolation: a claim first locks the webhooks that have due work and
are not paused (``FOR UPDATE SKIP LOCKED``), oldest due first, so two
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


def claim_due(
    limit: int,
    *,
    lease: datetime.timedelta,
    endpoint_concurrency: int,
    tenant_id: uuid.UUID | None = None,
) -> list[Claimed]:
    """Lease up to ``limit`` due deliveries, at most ``endpoint_concurrency`` per webhook.

    Deliveries of a disabled webhook are abandoned instead of claimed.
    """
    if limit <= 0:
        return []
    tenant = str(tenant_id) if tenant_id else None
    started = time.monotonic()
    with system_tx() as database:
        endpoints = database.execute_sql(
            "SELECT w.tenant_id, w.id, w.enabled FROM webhooks w "
            "WHERE (%(tenant)s::uuid IS NULL OR w.tenant_id = %(tenant)s::uuid) "
            "AND (NOT w.enabled OR w.paused_until IS NULL OR w.paused_until <= now()) "
            "AND EXISTS (SELECT 1 FROM webhook_deliveries d WHERE d.tenant_id = w.tenant_id "
            "  AND d.webhook_id = w.id AND d.status = 'pending' AND d.next_attempt_at <= now()) "
            "ORDER BY (SELECT min(d.next_attempt_at) FROM webhook_deliveries d "
            "  WHERE d.tenant_id = w.tenant_id AND d.webhook_id = w.id "
            "  AND d.status = 'pending') "
            "LIMIT %(limit)s FOR UPDATE OF w SKIP LOCKED",
            {"tenant": tenant, "limit": limit},
        ).fetchall()
        disabled = [(str(t), str(w)) for t, w, enabled in endpoints if not enabled]
        enabled = [(str(t), str(w)) for t, w, on in endpoints if on]
        for tenant_key, webhook in disabled:
            database.execute_sql(
                "UPDATE webhook_deliveries SET status = 'abandoned', "
                "response_excerpt = 'webhook disabled', updated_at = now() "
                "WHERE tenant_id = %s AND webhook_id = %s AND status = 'pending'",
                (tenant_key, webhook),
            )
        if not enabled:
            return []
        # NOTE: a new statement, so in-flight counts include claims that other
        # deliverers committed before this one locked the webhooks.
        rows = database.execute_sql(
            "WITH locked AS (SELECT * FROM unnest(%(tenants)s::uuid[], %(hooks)s::uuid[]) "
            "  AS l (tenant_id, webhook_id)), "
            "candidates AS (SELECT p.tenant_id, p.id, p.next_attempt_at FROM locked l "
            "  CROSS JOIN LATERAL (SELECT count(*) AS n FROM webhook_deliveries b "
            "    WHERE b.tenant_id = l.tenant_id AND b.webhook_id = l.webhook_id "
            "    AND b.status = 'delivering') busy "
            "  CROSS JOIN LATERAL (SELECT d.tenant_id, d.id, d.next_attempt_at "
            "    FROM webhook_deliveries d WHERE d.tenant_id = l.tenant_id "
            "    AND d.webhook_id = l.webhook_id AND d.status = 'pending' "
            "    AND d.next_attempt_at <= now() ORDER BY d.next_attempt_at, d.id "
            "    LIMIT greatest(%(cap)s - busy.n, 0)) p), "
            "due AS (SELECT d.tenant_id, d.id FROM webhook_deliveries d JOIN candidates c "
            "  ON c.tenant_id = d.tenant_id AND c.id = d.id WHERE d.status = 'pending' "
            "  ORDER BY c.next_attempt_at, d.id LIMIT %(limit)s FOR UPDATE OF d SKIP LOCKED) "
            "UPDATE webhook_deliveries d SET status = 'delivering', "
            "lease_token = gen_random_uuid(), lease_expires_at = now() + %(lease)s, "
            "updated_at = now() FROM due, webhooks w "
            "WHERE d.tenant_id = due.tenant_id AND d.id = due.id "
            "AND w.tenant_id = d.tenant_id AND w.id = d.webhook_id "
            "RETURNING d.tenant_id, d.id, d.webhook_id, w.url, w.secret_encrypted, "
            "d.payload, d.attempts, d.created_at, d.lease_token",
            {"tenants": [t for t, _ in enabled], "hooks": [w for _, w in enabled],
             "cap": endpoint_concurrency, "limit": limit, "lease": lease},
        ).fetchall()
    # The local deadline starts before the database's, so it always ends first.
    deadline = started + lease.total_seconds()
    claimed = [
        Claimed(_uuid(r[0]), r[1], _uuid(r[2]), r[3], bytes(r[4]),
                r[5] if isinstance(r[5], dict) else json.loads(r[5]), r[6], r[7],
                str(r[8]), deadline)
        for r in rows
    ]
    return sorted(claimed, key=lambda item: item.delivery_id)


def release(claimed: Claimed, not_before: datetime.datetime | None = None) -> bool:
    """Give a claim back unattempted (no attempt counted); False if the lease was lost."""
    with system_tx() as database:
        cursor = database.execute_sql(
            "UPDATE webhook_deliveries SET status = 'pending', lease_token = NULL, "
            "lease_expires_at = NULL, next_attempt_at = greatest(next_attempt_at, "
            "coalesce(%s, now())), updated_at = now() "
            "WHERE tenant_id = %s AND id = %s AND status = 'delivering' AND lease_token = %s",
            (not_before, str(claimed.tenant_id), claimed.delivery_id, claimed.lease_token),
        )
        return cursor.rowcount == 1


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
