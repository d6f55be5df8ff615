"""The outbox: claim due ledger rows under a lease, and record what happened.

``claim_batch`` runs as the system role in one short transaction and commits
before any network I/O:

1. lock due rows (``queued``/``deferred``, due now) with ``FOR UPDATE SKIP
   LOCKED`` so concurrent workers never share a row; rows of a campaign that
   is no longer sending leave the due set (``held`` while it is paused,
   ``cancelled`` otherwise) instead of being walked by every claim;
2. end rows whose address is suppressed (or whose contact is no longer
   active) as ``suppressed``: suppression is checked at claim time;
3. spend each tenant's send budget (rate per second as a token bucket and
   the daily quota, in ``send_budgets``) and push rows over budget later;
4. lease the rest to this worker (``sending``, ``lease_owner``,
   ``lease_expires_at``) and count the attempt.

A claim that loses its server (a PostgreSQL failover) is run once more
against the new primary (``db.failover``); if the lost COMMIT had landed,
the rows already leased to this owner come back instead of a second batch.

``record_results`` reports each transport answer to the one state writer
(``sending.state``), which applies it only while this worker still holds
the row's lease, so a batch whose lease expired and was claimed again
elsewhere never overwrites the newer attempt.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import math
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg2.extras import execute_values

from swiftmail_core.db import system_tx
from swiftmail_core.db.failover import retry_after_failover
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending.state import Report, apply_reports
from swiftmail_core.transports import Outcome, SendResult

MAX_BACKOFF = datetime.timedelta(hours=1)


@dataclasses.dataclass(frozen=True)
class ClaimedMessage:
    """A ledger row leased to this worker."""

    ledger_id: int
    tenant_id: uuid.UUID
    campaign_id: uuid.UUID | None
    contact_id: uuid.UUID | None
    email: str
    kind: str
    transport: str
    attempts: int
    payload: Mapping[str, Any]
    lease_owner: str
    variant: str | None = None


_CANDIDATES_SQL = """
WITH picked AS (
    SELECT m.tenant_id, m.id, m.kind, m.contact_id, m.email, m.campaign_id
    FROM messages m
    WHERE m.status IN ('queued', 'deferred') AND m.next_attempt_at <= now()
    ORDER BY m.next_attempt_at
    LIMIT %s
    FOR UPDATE OF m SKIP LOCKED
)
SELECT p.tenant_id, p.id,
       (p.kind = 'campaign' AND ct.status IS DISTINCT FROM 'active') OR EXISTS (
           SELECT 1 FROM suppressions x
           WHERE x.tenant_id = p.tenant_id AND x.email_lower = lower(p.email)
             AND (x.expires_at IS NULL OR x.expires_at > now())) AS suppressed,
       CASE WHEN p.kind <> 'campaign' THEN 'sending' ELSE cp.status END AS campaign_status
FROM picked p
LEFT JOIN contacts ct ON ct.tenant_id = p.tenant_id AND ct.id = p.contact_id
LEFT JOIN campaigns cp ON cp.tenant_id = p.tenant_id AND cp.id = p.campaign_id
"""
#: Where a due row of a campaign that is not sending goes, out of the due index:
#: a paused campaign's rows wait as 'held' until it resumes; any other state ends them.
PARKED_STATUS = {"paused": "held"}
#: NOTE: walk the due index in order and stop at LIMIT. Right after an
#: audience of a million rows is written the statistics still say "few due
#: rows", and the planner would rather bitmap-scan and sort every due row on
#: each claim; these settings last for the claim transaction only.
#: Rows still leased to one owner (the partial index on leased rows finds them).
_HELD_SQL = (
    "SELECT id, tenant_id, campaign_id, contact_id, email, kind, transport, attempts, "
    "payload, variant FROM messages "
    "WHERE status = 'sending' AND lease_owner = %s AND lease_expires_at > now() ORDER BY id")
_CLAIM_PLANNER_SQL = "SET LOCAL enable_bitmapscan = off; SET LOCAL enable_sort = off"

_BUDGET_SQL = """
SELECT b.tenant_id, b.tokens, extract(epoch FROM now() - b.refilled_at), b.day = current_date,
       b.day_count, t.send_rate_per_second, t.daily_quota,
       CASE WHEN EXISTS (SELECT 1 FROM sending_pauses p
                         WHERE p.tenant_id = t.id AND p.resumed_at IS NULL)
            THEN 'paused' ELSE t.status END,
       extract(epoch FROM (current_date + 1)::timestamptz - now())
FROM send_budgets b JOIN tenants t ON t.id = b.tenant_id
WHERE b.tenant_id = ANY (%s::uuid[])
ORDER BY b.tenant_id
FOR UPDATE OF b
"""


def _spend_budgets(database: Any, wanted: Mapping[str, int]) -> dict[str, tuple[int, float]]:
    """Spend budgets for ``{tenant: rows wanted}``; return {tenant: (granted, wait_seconds)}."""
    tenants = sorted(wanted)
    database.execute_sql(
        "INSERT INTO send_budgets (tenant_id, tokens) "
        "SELECT t.id, t.send_rate_per_second FROM tenants t WHERE t.id = ANY (%s::uuid[]) "
        "ON CONFLICT (tenant_id) DO NOTHING",
        (tenants,),
    )
    grants: dict[str, tuple[int, float]] = {}
    updates = []
    for (tenant, tokens, elapsed, same_day, day_count, rate, quota, status,
         to_midnight) in database.execute_sql(_BUDGET_SQL, (tenants,)).fetchall():
        tenant = str(tenant)
        if status != "active":
            grants[tenant] = (0, 300.0)
            continue
        tokens = min(float(rate), float(tokens) + float(elapsed) * rate)
        day_count = int(day_count) if same_day else 0
        quota_left = max(0, int(quota) - day_count)
        granted = min(wanted[tenant], math.floor(tokens), quota_left)
        if granted < wanted[tenant]:
            wait = float(to_midnight) if quota_left <= granted else (
                (wanted[tenant] - granted) / rate)
        else:
            wait = 0.0
        grants[tenant] = (granted, max(wait, 0.05))
        updates.append((tenant, tokens - granted, day_count + granted))
    if updates:
        execute_values(
            database.cursor(),
            "UPDATE send_budgets b SET tokens = v.tokens, refilled_at = now(), "
            "day = current_date, day_count = v.day_count "
            "FROM (VALUES %s) AS v (tenant_id, tokens, day_count) "
            "WHERE b.tenant_id = v.tenant_id::uuid",
            updates,
        )
    return grants


@retry_after_failover
def claim_batch(
    lease_owner: str | None = None, *, limit: int = 100, lease_seconds: int = 300
) -> list[ClaimedMessage]:
    """Lease up to ``limit`` due rows to ``lease_owner`` and commit; return them.

    Rows this owner already holds come back instead of new ones: a claim run
    again after its COMMIT landed but the answer was lost (a failover) gets
    the same batch, not a second one.
    """
    owner = lease_owner or f"w-{uuid.uuid4().hex}"
    with system_tx() as database:
        if lease_owner is not None:
            held = database.execute_sql(_HELD_SQL, (owner,)).fetchall()
            if held:
                return _claimed(held, owner)
        database.execute_sql(_CLAIM_PLANNER_SQL)
        found = database.execute_sql(_CANDIDATES_SQL, (limit,)).fetchall()
        if not found:
            return []
        parked = [(str(t), i, PARKED_STATUS.get(status, "cancelled"))
                  for t, i, _, status in found if status != "sending"]
        if parked:
            # NOTE: a row whose campaign stopped sending leaves the due set here, once,
            # instead of being walked (and skipped) by every claim after this one.
            execute_values(
                database.cursor(),
                "UPDATE messages m SET status = v.status, updated_at = now() "
                "FROM (VALUES %s) AS v (tenant_id, id, status) "
                "WHERE m.tenant_id = v.tenant_id::uuid AND m.id = v.id",
                parked,
            )
        candidates = [(t, i, is_suppressed) for t, i, is_suppressed, status in found
                      if status == "sending"]
        suppressed = [(str(t), i) for t, i, is_suppressed in candidates if is_suppressed]
        if suppressed:
            execute_values(
                database.cursor(),
                "UPDATE messages m SET status = 'suppressed', last_error = 'suppressed at send time', "
                "updated_at = now() FROM (VALUES %s) AS v (tenant_id, id) "
                "WHERE m.tenant_id = v.tenant_id::uuid AND m.id = v.id",
                suppressed,
            )
        by_tenant: dict[str, list[int]] = defaultdict(list)
        for tenant, ledger_id, is_suppressed in candidates:
            if not is_suppressed:
                by_tenant[str(tenant)].append(int(ledger_id))
        if not by_tenant:
            return []
        grants = _spend_budgets(database, {t: len(ids) for t, ids in by_tenant.items()})
        leased: list[tuple[str, int]] = []
        later: list[tuple[str, int, float]] = []
        for tenant, ids in by_tenant.items():
            granted, wait = grants.get(tenant, (0, 300.0))
            leased.extend((tenant, i) for i in ids[:granted])
            later.extend((tenant, i, wait) for i in ids[granted:])
        if later:
            execute_values(
                database.cursor(),
                "UPDATE messages m SET next_attempt_at = now() + make_interval(secs => v.wait) "
                "FROM (VALUES %s) AS v (tenant_id, id, wait) "
                "WHERE m.tenant_id = v.tenant_id::uuid AND m.id = v.id",
                later,
            )
        if not leased:
            return []
        rows = execute_values(
            database.cursor(),
            "UPDATE messages m SET status = 'sending', lease_owner = v.owner, "
            "lease_expires_at = now() + make_interval(secs => v.lease), "
            "attempts = m.attempts + 1, updated_at = now() "
            "FROM (VALUES %s) AS v (tenant_id, id, owner, lease) "
            "WHERE m.tenant_id = v.tenant_id::uuid AND m.id = v.id "
            "RETURNING m.id, m.tenant_id, m.campaign_id, m.contact_id, m.email, m.kind, "
            "m.transport, m.attempts, m.payload, m.variant",
            [(tenant, ledger_id, owner, float(lease_seconds)) for tenant, ledger_id in leased],
            fetch=True,
        )
    return _claimed(rows, owner)


def _claimed(rows: Sequence[Sequence[Any]], owner: str) -> list[ClaimedMessage]:
    return [
        ClaimedMessage(
            ledger_id=int(row[0]), tenant_id=_uuid(row[1]), campaign_id=_uuid(row[2]),
            contact_id=_uuid(row[3]), email=row[4], kind=row[5], transport=row[6],
            attempts=int(row[7]), payload=row[8] or {}, lease_owner=owner, variant=row[9],
        )
        for row in rows
    ]


def _uuid(value: Any) -> Any:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(str(value))


def backoff(attempts: int, base_seconds: int) -> datetime.timedelta:
    """Return the delay before retry number ``attempts`` (doubling, capped)."""
    delay = datetime.timedelta(seconds=base_seconds * 2 ** max(0, attempts - 1))
    return min(delay, MAX_BACKOFF)


@dataclasses.dataclass(frozen=True)
class RetryPolicy:
    """How transient failures are retried."""

    base_seconds: int = 60
    max_attempts: int = 10


def record_results(
    claimed: Sequence[ClaimedMessage],
    results: Sequence[SendResult],
    *,
    message_ids: Mapping[int, str] | None = None,
    policy: RetryPolicy = RetryPolicy(),
    plugins: PluginManager | None = None,
) -> dict[str, int]:
    """Report transport answers to the state writer; return counts per row status.

    Rows without an answer are deferred (a transport must answer for every
    message). Each answer counts only while this worker's lease holds.
    """
    by_id = {message.ledger_id: message for message in claimed}
    answered = {result.ledger_id: result for result in results if result.ledger_id in by_id}
    for ledger_id in by_id.keys() - answered.keys():
        answered[ledger_id] = SendResult(ledger_id, Outcome.DEFERRED, reason="no answer")
    message_ids = message_ids or {}
    reports = []
    for ledger_id, result in answered.items():
        message = by_id[ledger_id]
        retry_at: datetime.datetime | None = None
        bounce_class = result.bounce_class
        if result.outcome is Outcome.ACCEPTED:
            kind = "accepted"
        elif result.outcome is Outcome.UNKNOWN:
            kind = "unknown"
        elif result.outcome is Outcome.DEFERRED and message.attempts < policy.max_attempts:
            kind = "deferred"
            delay = result.retry_after or backoff(message.attempts, policy.base_seconds)
            retry_at = datetime.datetime.now(datetime.UTC) + delay
        elif result.outcome is Outcome.DEFERRED:
            kind, bounce_class = "expired", "expired"
        else:
            kind, bounce_class = "bounced", bounce_class or "hard"
        reports.append(Report(
            tenant_id=message.tenant_id, type=kind, ledger_id=ledger_id,
            source_key=f"send:{ledger_id}:{message.attempts}:{kind}",
            lease_owner=message.lease_owner, bounce_class=bounce_class,
            reason=result.reason, provider_message_id=result.provider_message_id,
            message_id=message_ids.get(ledger_id), retry_at=retry_at, source="send",
            detail={"transport": message.transport, "attempt": message.attempts},
        ))
    return dict(apply_reports(reports, plugins).statuses)


def fail_unrenderable(claimed: Sequence[ClaimedMessage], reasons: Mapping[int, str]) -> None:
    """End rows that could not be rendered as failed, with the reason."""
    apply_reports([
        Report(tenant_id=m.tenant_id, type="failed", ledger_id=m.ledger_id,
               source_key=f"send:{m.ledger_id}:{m.attempts}:failed", lease_owner=m.lease_owner,
               reason=reasons[m.ledger_id], source="send")
        for m in claimed if m.ledger_id in reasons])


@retry_after_failover
def release(claimed: Sequence[ClaimedMessage], delay_seconds: float = 0,
            status: str = "queued") -> None:
    """Give leased rows back (``queued``, or ``held`` for a paused campaign), attempt uncounted."""
    if status not in ("queued", "held"):
        raise ValueError(f"cannot release rows as {status!r}")
    rows = [(str(m.tenant_id), m.ledger_id, m.lease_owner) for m in claimed]
    if not rows:
        return
    with system_tx() as database:
        execute_values(
            database.cursor(),
            f"UPDATE messages m SET status = '{status}', "
            "attempts = greatest(m.attempts - 1, 0), "
            f"next_attempt_at = now() + interval '{float(delay_seconds)} seconds', "
            "lease_expires_at = NULL, updated_at = now() "
            "FROM (VALUES %s) AS v (tenant_id, id, owner) "
            "WHERE m.tenant_id = v.tenant_id::uuid AND m.id = v.id AND m.lease_owner = v.owner "
            "AND m.status = 'sending'",
            rows,
        )


def to_json(value: Any) -> str:
    """Serialise a payload for SQL."""
    return json.dumps(value, default=str)
