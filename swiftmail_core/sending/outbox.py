"""The outbox: claim due ledger rows under a lease, and record what happened.

``claim_batch`` claims tenant by tenant, each tenant in one short system
transaction committed before any network I/O, every statement naming the
tenant (a single-shard query on Citus, where row locks need one). Steps 2-5
and the tenant's hint are one SQL function, ``swiftmail_claim_tenant``
(migration 0190): one statement per tenant, which Citus runs whole on the
worker holding the tenant's shards (distributed function delegation):

1. find tenants with due mail in ``due_tenants`` (queue ``outbox``) and
   give each an equal share of the batch, starting after the tenant served
   last, so no tenant's campaign starves another's mail;
2. lock the tenant's due rows (``queued``/``deferred``, due now) with ``FOR
   UPDATE SKIP LOCKED`` so concurrent workers never share a row; rows of a
   campaign that is no longer sending leave the due set (``held`` while it
   is paused, ``cancelled`` otherwise) instead of being walked by every claim;
3. end rows whose address is suppressed (or whose contact is no longer
   active) as ``suppressed``: suppression is checked at claim time;
4. spend the tenant's send budget (rate per second as a token bucket and
   the daily quota, in ``send_budgets``) and push rows over budget later;
5. lease the rest to this worker (``sending``, ``lease_owner``,
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
import threading
import uuid
from collections.abc import Mapping, Sequence
from typing import Any

from swiftmail_core.db import system_db, system_tx
from swiftmail_core.db.conflicts import retry_on_conflict
from swiftmail_core.db.failover import retry_after_failover
from swiftmail_core.errors import TenantIsolationError
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending import due_tenants, state
from swiftmail_core.sending.state import Report, apply_reports, release_leases
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
    resend_to: str | None = None  # an earlier attempt's answer was lost there: only there
    resend_until: datetime.datetime | None = None


#: One tenant's rows still leased to one owner (the partial index on leased rows finds them).
_HELD_SQL = (
    "SELECT id, tenant_id, campaign_id, contact_id, email, kind, transport, attempts, "
    "payload, variant, resend_to, resend_until FROM messages "
    "WHERE tenant_id = %s AND status = 'sending' AND lease_owner = %s "
    "AND lease_expires_at > now() ORDER BY id")
#: How many recent lease owners this process remembers the claimed tenants of.
RECENT_OWNERS = 1024


class _RecentClaims:
    """The tenants each recent lease owner's claims touched, in this process.

    A claim run again under the same owner (after a failover lost its answer)
    looks for rows already leased to that owner only in those tenants: one
    single-shard read each on Citus instead of one read of every shard. A
    retry runs in the process that made the first attempt, so it knows them.
    """

    def __init__(self) -> None:
        self._tenants: dict[str, set[str]] = {}
        self._lock = threading.Lock()

    def tenants(self, owner: str) -> list[str]:
        """Return the tenants ``owner`` claimed in, or [] for an owner not seen lately."""
        with self._lock:
            return sorted(self._tenants.get(owner, ()))

    def note(self, owner: str, tenant: str) -> None:
        """Remember that ``owner`` is about to claim in ``tenant`` (before it commits)."""
        with self._lock:
            if owner not in self._tenants and len(self._tenants) >= RECENT_OWNERS:
                self._tenants.pop(next(iter(self._tenants)))
            self._tenants.setdefault(owner, set()).add(tenant)


_recent = _RecentClaims()


@retry_on_conflict
def _claim_tenant(tenant: str, owner: str, limit: int,
                  lease_seconds: int) -> tuple[list[ClaimedMessage], bool]:
    """Lease up to ``limit`` of one tenant's due rows; return them and whether it has more.

    One statement, its own transaction: ``swiftmail_claim_tenant`` locks,
    parks, suppresses, spends the budget, leases and, when the tenant ran out
    of due rows or of budget, moves its hint in ``due_tenants``. Every
    statement in it names the tenant; on Citus it runs on the tenant's worker.
    """
    if system_db.in_transaction():
        raise TenantIsolationError("a claim runs in its own transaction: call it outermost")
    with system_db.connection_context():
        more, rows = state.claim_rows(system_db, tenant, owner, limit, lease_seconds)
    return _claimed(rows, owner), more


def _claimed(rows: Sequence[Sequence[Any]], owner: str) -> list[ClaimedMessage]:
    claimed = [
        ClaimedMessage(
            ledger_id=int(row[0]), tenant_id=_uuid(row[1]), campaign_id=_uuid(row[2]),
            contact_id=_uuid(row[3]), email=row[4], kind=row[5], transport=row[6],
            attempts=int(row[7]), payload=row[8] or {}, lease_owner=owner, variant=row[9],
            resend_to=row[10], resend_until=row[11],
        )
        for row in rows
    ]
    claimed.sort(key=lambda message: message.ledger_id)
    return claimed


@retry_after_failover
def claim_batch(
    lease_owner: str | None = None, *, limit: int = 100, lease_seconds: int = 300
) -> list[ClaimedMessage]:
    """Lease up to ``limit`` due rows to ``lease_owner``, fairly across tenants; return them.

    Tenants with due mail (``due_tenants``) each get an equal share of the
    batch, starting after the tenant served last, so one tenant's huge
    campaign never starves another's transactional mail; room they leave
    goes to tenants with more. Each tenant is claimed in its own short
    transaction, committed before any network I/O. A round that found
    nothing rebuilds the hints from the ledger once and tries again.

    Rows this owner already holds come back instead of new ones: a claim run
    again after its COMMIT landed but the answer was lost (a failover) gets
    the same batch, not a second one. They are looked for only in the
    tenants this process saw the owner claim in (``_RecentClaims``), each a
    single-shard read.
    """
    return _claim_batch(lease_owner or f"w-{uuid.uuid4().hex}", limit, lease_seconds)


@retry_on_conflict
def _claim_batch(owner: str, limit: int, lease_seconds: int) -> list[ClaimedMessage]:
    """``claim_batch`` for a named owner; run again whole when the database says retry.

    Its cross-tenant reads (the due tenants, the hint rebuild) meet every shard:
    on Citus they fail while a tenant's shards move (``could not find valid entry
    for shard``). Safe to repeat: the rows the owner leased before the failure
    come back through the held-rows lookup.
    """
    held: list[Any] = []
    for tenant in _recent.tenants(owner):
        with system_tx() as database:
            held += database.execute_sql(_HELD_SQL, (tenant, owner)).fetchall()
    if held:
        return _claimed(held, owner)

    def claim_tenant(tenant: str, room: int) -> tuple[list[ClaimedMessage], bool]:
        _recent.note(owner, tenant)
        return _claim_tenant(tenant, owner, room, lease_seconds)

    return due_tenants.OUTBOX.claim_fairly(limit, claim_tenant)


def _utcnow() -> datetime.datetime:
    return datetime.datetime.now(datetime.UTC)


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
    resend_hours: float = 24.0  # how long a lost answer's row is resent to its receiver


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

    A row with a receiver to resend to (``resend_to``: an earlier or this
    answer was lost there, and that receiver drops repeats) that was not
    accepted stays ``deferred`` and is retried, there only, with backoff
    until ``resend_until`` (``policy.resend_hours`` after it was first lost),
    never ``expired`` by attempts (a copy may be at the receiver); after that
    it stays ``unknown`` like any lost answer.
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
        resend_to = result.resend_to or message.resend_to
        resend_until = message.resend_until
        if resend_to and resend_until is None:
            resend_until = _utcnow() + datetime.timedelta(hours=policy.resend_hours)
        if result.outcome is Outcome.ACCEPTED:
            kind = "accepted"
        elif resend_to and result.outcome in (Outcome.UNKNOWN, Outcome.DEFERRED):
            kind = "deferred" if resend_until is not None and _utcnow() < resend_until \
                else "unknown"
            if kind == "deferred":
                retry_at = _utcnow() + (result.retry_after
                                        or backoff(message.attempts, policy.base_seconds))
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
            detail={"transport": message.transport, "attempt": message.attempts,
                    **({"resend_to": resend_to} if resend_to else {})},
            resend_to=resend_to, resend_until=resend_until if resend_to else None,
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
@retry_on_conflict
def release(claimed: Sequence[ClaimedMessage], delay_seconds: float = 0,
            status: str = "queued") -> None:
    """Give leased rows back (``queued``, or ``held`` for a paused campaign), attempt uncounted."""
    if status not in ("queued", "held"):
        raise ValueError(f"cannot release rows as {status!r}")
    groups: dict[tuple[str, str], list[int]] = {}
    for message in claimed:
        groups.setdefault((str(message.tenant_id), message.lease_owner), []).append(
            message.ledger_id)
    for (tenant, owner), ids in sorted(groups.items()):
        with system_tx() as database:
            release_leases(database, tenant, owner, ids, delay_seconds, status)


def to_json(value: Any) -> str:
    """Serialise a payload for SQL."""
    return json.dumps(value, default=str)
