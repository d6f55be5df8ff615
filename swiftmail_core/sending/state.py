"""The one writer of a message's state: a transition table, applied with its events.

Everything that learns what happened to a ledger row reports it here: the
worker (transport answers, under its lease), the relay (deliveries,
deferrals, bounces, expiries), provider webhooks (SendGrid, Mailgun) and
DSN/ARF reports. ``apply_reports`` locks the rows, moves each along
``TRANSITIONS``, and stores the row changes, the events (deduplicated by
source key, with rollups) and the suppressions in ONE system transaction per
tenant of the batch (every statement names the tenant: one shard on Citus);
plugins hear of the new events after the commits.

States::

    queued -> sending (claimed, leased) -> accepted -> delivered -> complained
                 |                            |-> bounced
                 |-> deferred -> sending ...   |-> expired
                 |-> bounced / expired / failed / unknown
    queued -> suppressed / cancelled (at claim time, or by a cancel)
    queued / deferred <-> held (a paused campaign's rows, ``lifecycle``)
    waiting -> queued / held (an A/B test's decision: ``ab_tests.decision``) / cancelled

Besides reports, callers move rows by name (``MOVES``): a campaign paused,
resumed or cancelled (``lifecycle``, ``transport_failures``), a finished
campaign's failed rows sent again, an unsubscribe cancelling unclaimed mail,
an A/B test's waiting rows released, leased rows given back (``outbox``) or
reclaimed after their lease expired (``sweeper``). Each move is one
set-based UPDATE here, guarded by the statuses it may start from, and names
the tenant (a single-shard query on Citus) except the sweeper's reclaim,
which is cross-tenant on purpose. No other module writes ``messages.status``
(``tests/core/sending/test_state_writer.py`` fails if one does).

``waiting`` rows (the rest of an A/B test's audience) are outside the due
set and never reported on: nothing was sent. They leave it only by the
test's one conditional decision, which also gives them the winner's variant.

Reports can arrive late or out of order and still come out right:

* a worker's report counts only while its lease holds (``lease_owner`` and
  status ``sending``); a re-claimed row ignores the old attempt. Its
  ``accepted`` arriving after the relay already said ``delivered`` (or
  ``bounced``) keeps that state but still records the accepted event and the
  message and provider ids;
* ``deferred`` from a relay or provider never changes the row (the relay owns
  its retries, and a row set to deferred would be claimed and sent again), so
  a late deferral never overwrites ``delivered``;
* ``bounced`` after ``delivered`` (a DSN) is recorded as a bounce event, with
  its suppression, without un-delivering; ``complained`` ends a delivered
  message as ``complained``;
* ``unknown``: the request went out but its answer was lost (an HTTP
  transport's read timeout). The row is not claimed again; the provider's
  events move it on. When the transport names the receiver it may be at and
  that receiver drops repeats (``resend_to``: the relay transport's network
  mode), the worker reports ``deferred`` instead, the row keeps
  ``resend_to``/``resend_until`` (the first values stick) and every later
  attempt goes to that receiver only (``outbox.record_results``).

Events are idempotent by ``source_key`` (``events.store_events``), so a report
delivered twice counts once and rollups stay equal to a recount of events.
"""

from __future__ import annotations

import dataclasses
import datetime
import uuid
from collections import defaultdict
from collections.abc import Mapping, Sequence
from typing import Any

from psycopg2.extras import execute_values

from swiftmail_core import parent_rows
from swiftmail_core.db import system_tx
from swiftmail_core.db.by_key import rows_by_key, tenant_operand
from swiftmail_core.db.conflicts import retry_on_conflict
from swiftmail_core.db.failover import retry_after_failover
from swiftmail_core.events import EventRecord, notify_plugins, store_events
from swiftmail_core.models import utcnow
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending import due_tenants, send_time
from swiftmail_core.suppressions import SuppressionEntry, suppress_within

KEEP = None
#: Report types a worker sends about an attempt it holds the lease of.
ATTEMPT_RESULTS = frozenset({"accepted", "deferred", "expired", "bounced", "failed", "unknown"})
#: Report types that become events (``failed`` and ``unknown`` are row states only).
EVENT_TYPES = frozenset({"accepted", "deferred", "delivered", "bounced", "complained",
                         "expired", "opened", "clicked", "unsubscribed"})
_IN_FLIGHT = ("sending", "accepted", "deferred", "unknown")

#: (current status, report type) -> new status, for reports about the message's
#: fate (relay, provider, DSN/ARF). Pairs not listed keep the current status.
TRANSITIONS: dict[tuple[str, str], str] = {
    **{(state, "delivered"): "delivered" for state in (*_IN_FLIGHT, "expired", "queued")},
    **{(state, "bounced"): "bounced" for state in (*_IN_FLIGHT, "expired", "queued")},
    **{(state, "complained"): "complained"
       for state in (*_IN_FLIGHT, "delivered", "expired")},
    **{(state, "expired"): "expired" for state in _IN_FLIGHT},
}
#: A worker's answer for the attempt it leased (status ``sending``).
ATTEMPT_TRANSITIONS: dict[str, str] = {kind: kind for kind in ATTEMPT_RESULTS}
#: States a worker's late ``accepted`` may find a row in and leave as they are.
AHEAD_OF_ACCEPTED = frozenset({"delivered", "bounced", "complained"})
SUPPRESS_REASON = {"complained": "complaint", "unsubscribed": "unsubscribe"}


@dataclasses.dataclass(frozen=True)
class Report:
    """What one source learned about one message (or, without a ledger row, one address)."""

    tenant_id: uuid.UUID
    type: str
    source_key: str
    ledger_id: int | None = None
    email: str | None = None
    occurred_at: datetime.datetime = dataclasses.field(default_factory=utcnow)
    bounce_class: str | None = None
    reason: str = ""
    provider_message_id: str | None = None
    message_id: str | None = None
    retry_at: datetime.datetime | None = None
    lease_owner: str | None = None
    is_machine: bool = False
    source: str = ""
    require_email_match: bool = False
    detail: Mapping[str, Any] = dataclasses.field(default_factory=dict)
    resend_to: str | None = None
    resend_until: datetime.datetime | None = None


@dataclasses.dataclass
class Applied:
    """What a batch changed: final row statuses by report, and the events stored."""

    statuses: dict[str, int] = dataclasses.field(default_factory=lambda: defaultdict(int))
    events: list[EventRecord] = dataclasses.field(default_factory=list)
    ignored: int = 0


@dataclasses.dataclass
class _Row:
    status: str
    lease_owner: str | None
    campaign_id: Any
    contact_id: Any
    email: str
    kind: str
    changes: dict[str, Any] = dataclasses.field(default_factory=dict)


def next_status(current: str, report: Report, lease_holds: bool) -> str | None:
    """Return the row's new status for ``report``, KEEP (None) to leave it."""
    if report.lease_owner is not None:
        return ATTEMPT_TRANSITIONS.get(report.type) if lease_holds else KEEP
    return TRANSITIONS.get((current, report.type), KEEP)


def apply_reports(reports: Sequence[Report], plugins: PluginManager | None = None) -> Applied:
    """Apply reports to their rows, events and suppressions, one transaction per tenant.

    A tenant's transaction that loses its server (a PostgreSQL failover) runs
    once more on the new primary: transitions, lease checks and event source
    keys make a second run change nothing the first one committed.
    """
    applied = Applied()
    by_tenant: dict[str, list[Report]] = defaultdict(list)
    for report in reports:
        by_tenant[str(report.tenant_id)].append(report)
    for tenant in sorted(by_tenant):
        part = _apply_in_transaction(tenant, by_tenant[tenant])
        for status, count in part.statuses.items():
            applied.statuses[status] += count
        applied.events.extend(part.events)
        applied.ignored += part.ignored
    notify_plugins(plugins, applied.events)
    return applied


@retry_after_failover
@retry_on_conflict
def _apply_in_transaction(tenant: str, reports: Sequence[Report]) -> Applied:
    # NOTE: one tenant per transaction: every statement names the tenant, so on
    # Citus each is a single-shard query (row locks need one) and commits on one node.
    applied = Applied()
    with system_tx() as database:
        # NOTE: the tenant before its rows, as `swiftmail tenant delete` locks them
        # (the tenant, then by cascade the ledger rows): the events' foreign key
        # would lock it after the rows, and the two deadlocked.
        parent_rows.lock_tenant_first(database, tenant)
        applied.events = _apply_tenant(database, tenant, reports, applied)
    return applied


def _apply_tenant(database: Any, tenant: str, reports: Sequence[Report],
                  applied: Applied) -> list[EventRecord]:
    """Apply one tenant's reports inside the caller's transaction; return new events."""
    rows = _lock_rows(database, tenant, reports)
    events: list[EventRecord] = []
    suppressions: list[SuppressionEntry] = []
    for report in reports:
        row = rows.get(report.ledger_id) if report.ledger_id else None
        if report.ledger_id is not None and (row is None or not _email_matches(report, row)):
            applied.ignored += 1  # APPSEC: only a row of this tenant, to this address
            continue
        if row is not None and not _advance(row, report, applied):
            applied.ignored += 1
            continue
        if report.type in EVENT_TYPES:
            events.append(_event(report, row))
        entry = _suppression(report, row)
        if entry is not None:
            suppressions.append(entry)
    _write_rows(database, tenant, rows)
    retries = [row.changes["next_attempt_at"] for row in rows.values()
               if row.changes.get("status", row.status) == "deferred"
               and row.changes.get("next_attempt_at") is not None]
    if retries:
        due_tenants.mark_due(database, tenant, min(retries))
    suppress_within(database, suppressions)
    return store_events(database, events)


def _lock_rows(database: Any, tenant: str, reports: Sequence[Report]) -> dict[int, _Row]:
    ids = sorted({int(r.ledger_id) for r in reports if r.ledger_id is not None})
    if not ids:
        return {}
    # NOTE: locked in id order (the lock order), one key probe each (db/by_key.py).
    found = database.execute_sql(
        "SELECT m.id, m.status, m.lease_owner, m.campaign_id, m.contact_id, m.email, m.kind "
        f"FROM {rows_by_key('messages', 'm', id_type='bigint', lock=True)}",
        (ids, tenant)).fetchall()
    return {int(ident): _Row(status, owner, campaign, contact, email, kind)
            for ident, status, owner, campaign, contact, email, kind in found}


def _email_matches(report: Report, row: _Row) -> bool:
    return not report.require_email_match or (
        report.email is not None and report.email.lower() == row.email.lower())


def _advance(row: _Row, report: Report, applied: Applied) -> bool:
    """Move the row for ``report``; return False when the report is stale."""
    lease_holds = row.status == "sending" and row.lease_owner == report.lease_owner
    if report.lease_owner is not None and not lease_holds:
        late_accept = (report.type == "accepted" and row.status in AHEAD_OF_ACCEPTED
                       and row.lease_owner == report.lease_owner)
        if not late_accept:
            return False  # the lease expired and the row moved on: not this attempt's to say
        row.changes["lease_expires_at"] = None
        _ids(row, report)
        applied.statuses[row.status] += 1
        return True
    new = next_status(row.status, report, lease_holds)
    if report.lease_owner is not None:
        row.changes["lease_expires_at"] = None
        if report.retry_at is not None:
            row.changes["next_attempt_at"] = report.retry_at
        if report.resend_to:
            row.changes["resend_to"] = report.resend_to
            row.changes["resend_until"] = report.resend_until
    if new is not None and new != row.status:
        row.status = row.changes["status"] = new
        if new in ("accepted", "delivered"):
            row.changes.setdefault("sent_at", report.occurred_at)
    if report.reason and (new is not None or report.lease_owner is not None):
        row.changes["last_error"] = report.reason[:1000]
    _ids(row, report)
    applied.statuses[row.status] += 1
    return True


def _ids(row: _Row, report: Report) -> None:
    if report.provider_message_id:
        row.changes["provider_message_id"] = report.provider_message_id
    if report.message_id:
        row.changes["message_id"] = report.message_id


_COLUMNS = ("status", "lease_expires_at", "next_attempt_at", "sent_at", "last_error",
            "provider_message_id", "message_id", "resend_to", "resend_until")


def _write_rows(database: Any, tenant: str, rows: Mapping[int, _Row]) -> None:
    changed = [(ident, row) for ident, row in rows.items() if row.changes]
    if not changed:
        return
    values = []
    for ident, row in changed:
        change = row.changes
        values.append((
            ident, change.get("status"), "lease_expires_at" in change,
            change.get("next_attempt_at"), change.get("sent_at"), change.get("last_error"),
            change.get("provider_message_id"), change.get("message_id"),
            change.get("resend_to"), change.get("resend_until")))
    # APPSEC: the tenant is the text of a UUID (it keys the reports' tenant_id).
    tenant_key = tenant_operand(f"'{uuid.UUID(tenant)}'")
    execute_values(
        database.cursor(),
        "UPDATE messages m SET status = coalesce(v.status, m.status), "
        "lease_expires_at = CASE WHEN v.clear_lease THEN NULL ELSE m.lease_expires_at END, "
        "next_attempt_at = coalesce(v.next_attempt_at, m.next_attempt_at), "
        "sent_at = coalesce(m.sent_at, v.sent_at), "
        "last_error = coalesce(v.last_error, m.last_error), "
        "provider_message_id = coalesce(v.provider_message_id, m.provider_message_id), "
        "message_id = coalesce(v.message_id, m.message_id), "
        # The first receiver sticks: a resend never goes anywhere else.
        "resend_to = coalesce(m.resend_to, v.resend_to), "
        "resend_until = coalesce(m.resend_until, v.resend_until), updated_at = now() "
        "FROM (VALUES %s) AS v (id, status, clear_lease, next_attempt_at, sent_at, "
        "last_error, provider_message_id, message_id, resend_to, resend_until) "
        f"WHERE m.tenant_id = {tenant_key} AND m.id = v.id",
        values,
        # NOTE: typed in VALUES, not cast in SET: Citus refuses a non-immutable
        # cast (text to timestamptz) inside COALESCE in an UPDATE.
        template="(%s::bigint, %s::text, %s::boolean, %s::timestamptz, %s::timestamptz, "
                 "%s::text, %s::text, %s::text, %s::text, %s::timestamptz)")


def _event(report: Report, row: _Row | None) -> EventRecord:
    bounce_class = report.bounce_class
    if report.type == "expired":
        bounce_class = bounce_class or "expired"
    if report.type not in ("bounced", "deferred", "expired"):
        bounce_class = None
    return EventRecord(
        tenant_id=report.tenant_id, type=report.type, occurred_at=report.occurred_at,
        message_id=report.ledger_id if row is not None else None,
        campaign_id=_uuid(row.campaign_id) if row is not None else None,
        contact_id=_uuid(row.contact_id) if row is not None else None,
        email=row.email if row is not None else report.email,
        bounce_class=bounce_class, is_machine=report.is_machine, source_key=report.source_key,
        detail={**({"reason": report.reason[:500]} if report.reason else {}),
                **dict(report.detail)})


def _suppression(report: Report, row: _Row | None) -> SuppressionEntry | None:
    if row is not None and row.kind == "test":
        return None
    reason = SUPPRESS_REASON.get(report.type)
    if report.type == "bounced" and (report.bounce_class or "hard") == "hard":
        reason = "hard_bounce"
    email = row.email if row is not None else report.email
    if reason is None or not email:
        return None
    return SuppressionEntry(report.tenant_id, email, reason, source=report.source,
                            detail=report.reason[:500])


def _uuid(value: Any) -> uuid.UUID | None:
    if value is None or isinstance(value, uuid.UUID):
        return value
    return uuid.UUID(str(value))


# --- Named moves: rows a caller moves on purpose, not reports about a send ----------


@dataclasses.dataclass(frozen=True)
class Move:
    """A named move of ledger rows: the statuses it starts from, those it may end in."""

    start: frozenset[str]
    end: frozenset[str]


def _move(start: set[str], end: set[str]) -> Move:
    return Move(frozenset(start), frozenset(end))


_DUE = {"queued", "deferred"}
_NOT_CLAIMED = {"queued", "deferred", "held", "waiting"}
#: Every move a caller may make, by name (``lifecycle``, ``transport_failures``,
#: ``self_service``, ``ab_tests.decision``, ``outbox``, ``sweeper``).
MOVES: dict[str, Move] = {
    # A paused campaign's due rows wait out of the due set (a person, or a failing transport).
    "hold": _move(_DUE, {"held"}),
    "resume": _move({"held"}, {"queued"}),
    "cancel": _move(_NOT_CLAIMED, {"cancelled"}),
    # A sent campaign's failed rows, sent afresh (bounced rows are not: suppressed).
    "resend_failed": _move({"failed", "expired"}, {"queued"}),
    # An unsubscribe ends the contact's mail not claimed yet.
    "unsubscribe_campaign": _move(_NOT_CLAIMED, {"cancelled"}),
    "unsubscribe_journey": _move(_DUE, {"cancelled"}),
    # An A/B test's decision releases the rest of the audience (held while paused).
    "release_waiting": _move({"waiting"}, {"queued", "held"}),
    # A worker gives its leased rows back, attempt uncounted.
    "release_lease": _move({"sending"}, {"queued", "held"}),
    # The sweeper takes back rows whose lease expired.
    "reclaim_lease": _move({"sending"}, {"queued", "held", "cancelled"}),
    # The outbox claim (rows it locked): a stopped campaign's rows leave the due
    # set, suppressed addresses end, the rest are leased to the claiming worker
    # (in SQL: ``claim_rows`` and migration 0190, with these guards).
    "park": _move(_DUE, {"held", "cancelled"}),
    "suppress": _move(_DUE, {"suppressed"}),
    "lease": _move(_DUE, {"sending"}),
}


def _from(name: str, column: str = "status") -> str:
    """Return the SQL guard ``status IN (...)`` of move ``name`` (constants only)."""
    listed = ", ".join(f"'{status}'" for status in sorted(MOVES[name].start))
    return f"{column} IN ({listed})"


def _to(name: str, status: str) -> str:
    if status not in MOVES[name].end:
        raise ValueError(f"move {name!r} cannot end rows as {status!r}")
    return status


def hold_campaign_rows(database: Any, tenant_id: uuid.UUID | str,
                       campaign_ids: Sequence[uuid.UUID | str]) -> int:
    """Move paused campaigns' due rows out of the due set as ``held``; return how many."""
    cursor = database.execute_sql(
        "UPDATE messages SET status = 'held', updated_at = now() "
        f"WHERE tenant_id = %s AND campaign_id = ANY (%s::uuid[]) AND {_from('hold')}",
        (str(tenant_id), [str(campaign) for campaign in campaign_ids]))
    return int(cursor.rowcount)


def resume_campaign_rows(database: Any, tenant_id: uuid.UUID | str,
                         campaign_id: uuid.UUID | str) -> int:
    """Queue a resumed campaign's held rows again; return how many.

    A row with a local send time still ahead keeps it (docs/send-time.md).
    """
    cursor = database.execute_sql(
        "UPDATE messages SET status = 'queued', "
        "next_attempt_at = greatest(next_attempt_at, now()), updated_at = now() "
        f"WHERE tenant_id = %s AND campaign_id = %s AND {_from('resume')}",
        (str(tenant_id), str(campaign_id)))
    return int(cursor.rowcount)


def cancel_campaign_rows(database: Any, tenant_id: uuid.UUID | str,
                         campaign_id: uuid.UUID | str) -> int:
    """End a cancelled campaign's unclaimed rows (queued, deferred, held, waiting)."""
    cursor = database.execute_sql(
        "UPDATE messages SET status = 'cancelled', lease_owner = NULL, updated_at = now() "
        f"WHERE tenant_id = %s AND campaign_id = %s AND {_from('cancel')}",
        (str(tenant_id), str(campaign_id)))
    return int(cursor.rowcount)


def requeue_failed_rows(database: Any, tenant_id: uuid.UUID | str,
                        campaign_id: uuid.UUID | str) -> int:
    """Queue a campaign's failed and expired rows as fresh sends; return how many."""
    cursor = database.execute_sql(
        "UPDATE messages SET status = 'queued', attempts = 0, next_attempt_at = now(), "
        "last_error = NULL, lease_owner = NULL, lease_expires_at = NULL, updated_at = now(), "
        # A fresh send: not pinned to the receiver of an old lost answer.
        "resend_to = NULL, resend_until = NULL "
        "WHERE tenant_id = %s AND campaign_id = %s AND kind = 'campaign' "
        f"AND {_from('resend_failed')}",
        (str(tenant_id), str(campaign_id)))
    return int(cursor.rowcount)


def cancel_unsubscribed(database: Any, tenant_id: uuid.UUID | str,
                        contact_id: uuid.UUID | str, kind: str,
                        list_ids: Sequence[str] | None = None) -> int:
    """Cancel a contact's unclaimed ``campaign`` (of ``list_ids``, or all) or ``journey`` mail.

    Campaign mail includes rows not due yet (an A/B test's ``waiting``, a
    paused campaign's ``held``): the claim checks the contact and
    suppressions, not one list's subscription.
    """
    if kind not in ("campaign", "journey"):
        raise ValueError(f"no unsubscribe move for {kind!r} mail")
    scope = ""
    params: list[object] = [str(tenant_id), str(contact_id), kind]
    if list_ids is not None:
        scope = (" AND campaign_id IN (SELECT id FROM campaigns WHERE tenant_id = %s "
                 "AND list_ids && %s::uuid[])")
        params += [str(tenant_id), list(list_ids)]
    cursor = database.execute_sql(
        "UPDATE messages SET status = 'cancelled', last_error = 'unsubscribed', "
        "updated_at = now() WHERE tenant_id = %s AND contact_id = %s AND kind = %s "
        f"AND {_from('unsubscribe_' + kind)}" + scope, params)
    return int(cursor.rowcount)


#: The waiting rows a release takes, locked (another release skips them).
_PICK_WAITING_SQL = f"""
SELECT id FROM messages WHERE tenant_id = %s AND campaign_id = %s
  AND {_from('release_waiting')}
ORDER BY id LIMIT %s FOR UPDATE SKIP LOCKED
"""
#: Released rows go now.
_RELEASE_WAITING_SQL = f"""
UPDATE messages SET variant = %s, status = %s, updated_at = now(), next_attempt_at = now()
WHERE tenant_id = %s AND id = ANY (%s::bigint[]) AND {_from('release_waiting')}
"""
#: With a local send time (docs/send-time.md) a row keeps its time while it is
#: ahead; one whose time has passed waits for the next moment its recipient's
#: zone reads the local time again (by the zone's calendar, so a daylight
#: saving change in between keeps the wall-clock time), as the audience INSERT
#: computes it.
_RELEASE_WAITING_LOCAL_SQL = f"""
UPDATE messages m SET variant = %s, status = %s, updated_at = now(),
    next_attempt_at = CASE WHEN m.next_attempt_at >= %s::timestamptz THEN m.next_attempt_at
                           ELSE {send_time.not_before_sql('z.zone')} END
FROM (SELECT w.id, {send_time.contact_zone_sql('c.attributes')} AS zone
      FROM messages w LEFT JOIN contacts c
        ON c.tenant_id = %s AND c.tenant_id = w.tenant_id AND c.id = w.contact_id
      WHERE w.tenant_id = %s AND w.id = ANY (%s::bigint[])) z
WHERE m.tenant_id = %s AND m.id = z.id AND m.id = ANY (%s::bigint[])
  AND {_from('release_waiting')}
"""


def release_waiting(database: Any, tenant_id: uuid.UUID | str, campaign_id: uuid.UUID | str,
                    variant: str, status: str, local_send_time: str | None, limit: int) -> int:
    """Give up to ``limit`` waiting rows ``variant`` and move them to ``status``; return how many.

    ``status`` is ``queued``, or ``held`` while the campaign is paused;
    ``local_send_time`` is the campaign's (``HH:MM``), or None to send now.
    """
    # NOTE: pick, then update by id. As one "UPDATE ... WHERE id IN (SELECT ... LIMIT n
    # FOR UPDATE SKIP LOCKED)" PostgreSQL may run the subquery again for each outer row,
    # each run skipping the rows already updated and locking n more (as jobs.claim_jobs).
    picked = [int(ident) for (ident,) in database.execute_sql(
        _PICK_WAITING_SQL, (str(tenant_id), str(campaign_id), limit)).fetchall()]
    if not picked:
        return 0
    tenant, to = str(tenant_id), _to("release_waiting", status)
    if local_send_time is None:
        cursor = database.execute_sql(_RELEASE_WAITING_SQL, (variant, to, tenant, picked))
        return int(cursor.rowcount)
    # NOTE: now() read once and passed as a value (Citus refuses it inside CASE).
    (now,) = database.execute_sql("SELECT now()").fetchone()
    cursor = database.execute_sql(_RELEASE_WAITING_LOCAL_SQL, (
        variant, to, now, *send_time.not_before_params(now, local_send_time),
        sorted(send_time.zone_names(database)), send_time.tenant_zone(database, tenant_id),
        tenant, tenant, picked, tenant, picked))
    return int(cursor.rowcount)


def release_leases(database: Any, tenant_id: uuid.UUID | str, lease_owner: str,
                   ids: Sequence[int], delay_seconds: float, status: str) -> int:
    """Give rows leased to ``lease_owner`` back as ``status``, attempt uncounted; return how many.

    ``queued`` rows are due after ``delay_seconds`` (the tenant's hint says so);
    ``held`` ones wait for their paused campaign to resume.
    """
    cursor = database.execute_sql(
        "UPDATE messages SET status = %s, attempts = greatest(attempts - 1, 0), "
        "next_attempt_at = now() + make_interval(secs => %s), "
        "lease_expires_at = NULL, updated_at = now() "
        "WHERE tenant_id = %s AND id = ANY (%s::bigint[]) AND lease_owner = %s "
        f"AND {_from('release_lease')}",
        (_to("release_lease", status), float(delay_seconds), str(tenant_id), list(ids),
         lease_owner))
    if status == "queued":
        due_tenants.mark_due(database, str(tenant_id), utcnow() + datetime.timedelta(
            seconds=float(delay_seconds)))
    return int(cursor.rowcount)


def reclaim_expired_leases(database: Any) -> list[tuple[str, str]]:
    """Take back every row whose lease expired; return (tenant_id, new status) of each.

    Cross-tenant machinery (the sweeper). ``lease_owner`` is kept, so a slow
    worker's late answer still lands unless another worker has claimed the
    row since. A row of a campaign paused meanwhile waits as ``held``; one of
    a cancelled campaign ends ``cancelled``; the rest are queued now.
    """
    rows = database.execute_sql(
        # NOTE: a searched CASE: Citus 13.2 deparses a simple one (CASE x WHEN ...)
        # inside a pushed-down subquery wrongly ("operator does not exist").
        "/* cross-tenant */ UPDATE messages m SET status = coalesce((SELECT CASE "
        "  WHEN c.status = 'paused' THEN 'held' WHEN c.status = 'cancelled' THEN 'cancelled' "
        "  END FROM campaigns c WHERE c.tenant_id = m.tenant_id AND c.id = m.campaign_id), "
        "  'queued'), "
        "lease_expires_at = NULL, next_attempt_at = now(), updated_at = now() "
        f"WHERE {_from('reclaim_lease', 'm.status')} AND m.lease_expires_at < now() "
        "RETURNING m.tenant_id::text, m.status"
    ).fetchall()
    for tenant in sorted({tenant for tenant, status in rows if status == "queued"}):
        due_tenants.mark_due(database, tenant)
    return [(tenant, status) for tenant, status in rows]


#: The outbox claim's moves ("park", "suppress", "lease", with the guards of
#: ``MOVES``) run inside one SQL function of this writer, ``swiftmail_claim_tenant``
#: (migration 0190): one statement per tenant, which Citus runs whole on the worker
#: holding the tenant's shards. It returns the leased rows (``outbox.ClaimedMessage``'s
#: columns, in order), each after ``more``; a claim that leased nothing returns one row
#: of NULLs carrying ``more``. Called outside any transaction block (Citus delegates
#: a function call only there).
_CLAIM_SQL = "SELECT * FROM swiftmail_claim_tenant(%s::uuid, %s::text, %s::integer, %s::float8)"


def claim_rows(database: Any, tenant_id: uuid.UUID | str, lease_owner: str, limit: int,
               lease_seconds: float) -> tuple[bool, list[Any]]:
    """Claim up to ``limit`` of a tenant's due rows for ``lease_owner``; return (more, rows).

    In one statement and its own transaction (``database`` outside a
    transaction block): lock due rows ``FOR UPDATE SKIP LOCKED``, park rows
    of campaigns no longer sending (``held`` while paused, else
    ``cancelled``), end suppressed addresses, spend the tenant's send budget
    (token bucket and daily quota; rows over it wait), lease the rest and
    move the tenant's due-tenant hint when it ran out of due rows or budget.
    ``more``: the tenant may have more due rows.
    """
    found = database.execute_sql(
        _CLAIM_SQL, (str(tenant_id), lease_owner, int(limit), float(lease_seconds))).fetchall()
    more = bool(found[0][0]) if found else False
    return more, [row[1:] for row in found if row[1] is not None]
