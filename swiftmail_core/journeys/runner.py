"""Run due journey steps: claim positions under a lease, apply steps atomically.

1. ``claim_due`` leases due enrollments tenant by tenant through the
   due-tenant hints (``swiftmail_core.due_tenants``, queue ``journeys``; system
   role, ``FOR UPDATE SKIP LOCKED`` within one tenant): ``status = 'active'``,
   ``next_run_at <= now()`` and no live lease. An expired lease (its worker died) is claimable again, so
   the claim is also the sweeper.
2. ``run_enrollments`` opens the tenant's ``tenant_tx`` (up to
   ``ENROLLMENTS_PER_TRANSACTION`` enrollments share it, each in its own
   savepoint), locks each row while this worker still holds its lease, and
   applies steps from the current one until a wait, the end or an exit. Each step's effect (a
   ledger row, a subscription, a jump), its ``journey_step_runs`` row and the
   enrollment's advance commit together: a crash before COMMIT leaves no
   trace and the step runs again after the lease expires; after COMMIT the
   position has moved on. The step-run key ``(enrollment, step)`` refuses a
   second run of a step outright.
3. A step that raises is rolled back; the enrollment retries later with
   backoff (``attempts``) and exits as ``failed`` after ``MAX_ATTEMPTS``.

Each of these transactions first locks its tenant's row ``FOR KEY SHARE``,
which stands in for its emails' ledger rows' foreign key to tenants (0197)
and which the foreign keys of its step runs and due-tenant hints would take
later:
``swiftmail tenant delete`` locks the tenant and then, cascading, its
enrollments and hints, and a transaction holding those before the tenant
deadlocked with it. On Citus no lock (``parent_rows.lock_tenant_first``).

A contact who is no longer active (unsubscribed, bounced...) or whose
address is suppressed leaves the journey when its next step comes due.
"""

from __future__ import annotations

import dataclasses
import datetime
import json
import logging
import threading
import time
import uuid
from typing import Any

from swiftmail_core import parent_rows
from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.journeys import clock
from swiftmail_core.journeys.definition import EXIT, NEXT, Step, parse_steps
from swiftmail_core.journeys.enrollment import JOURNEYS, enroll_subscribed
from swiftmail_core.models import utcnow
from swiftmail_core.segments.compiler import compile_segment
from swiftmail_core.sending import due_tenants, send_time
from swiftmail_core.sending.links import register_journey_links

log = logging.getLogger(__name__)

LEASE_SECONDS = 120
#: Enrollments one claim leases, and how many of a tenant share one transaction.
CLAIM_BATCH = 200
ENROLLMENTS_PER_TRANSACTION = 50
MAX_ATTEMPTS = 5
RETRY_BASE_SECONDS = 30
#: A paused journey's contacts look again after this long.
PAUSED_WAIT_SECONDS = 60
#: What journey emails go through (the same default as campaigns).
DEFAULT_TRANSPORT = "relay"

_CLAIM_SQL = """
UPDATE journey_enrollments e
SET lease_owner = %(owner)s, lease_expires_at = now() + make_interval(secs => %(lease)s)
WHERE e.tenant_id = %(tenant)s AND e.id IN (
      SELECT id FROM journey_enrollments
      WHERE tenant_id = %(tenant)s AND status = 'active' AND next_run_at <= now()
        AND (lease_expires_at IS NULL OR lease_expires_at <= now())
      ORDER BY next_run_at
      LIMIT %(limit)s
      FOR UPDATE SKIP LOCKED)
RETURNING e.tenant_id, e.id
"""
#: Lock the enrollments while this owner holds their leases (alone: on Citus a row
#: lock in a statement that also reads the reference table ``tenants`` is refused).
_LOCK_SQL = """
SELECT id FROM journey_enrollments
WHERE tenant_id = %(tenant)s AND id = ANY (%(ids)s::uuid[]) AND status = 'active'
  AND lease_owner = %(owner)s
ORDER BY id
FOR UPDATE
"""
_LOAD_SQL = """
SELECT e.id, e.journey_id, e.contact_id, e.version, e.step, e.trigger_data, j.status,
       c.status, c.email, c.attributes ->> 'timezone', t.settings ->> 'timezone',
       EXISTS (SELECT 1 FROM suppressions x WHERE x.tenant_id = %(tenant)s
               AND x.email_lower = c.email_lower
               AND (x.expires_at IS NULL OR x.expires_at > now()))
FROM journey_enrollments e
JOIN journeys j ON j.tenant_id = %(tenant)s AND j.id = e.journey_id
JOIN contacts c ON c.tenant_id = %(tenant)s AND c.id = e.contact_id
JOIN tenants t ON t.id = %(tenant)s
WHERE e.tenant_id = %(tenant)s AND e.id = ANY (%(ids)s::uuid[])
"""
_STEP_RUN_COLUMNS = ("(tenant_id, enrollment_id, step, journey_id, version, step_id, outcome, "
                     "message_id)")
#: Not loaded yet: ``_run`` loads the enrollment itself.
_LOAD = object()

_versions: dict[tuple[str, str, int], tuple[Step, ...]] = {}
_versions_lock = threading.Lock()


@dataclasses.dataclass
class _Position:
    tenant_id: str
    enrollment_id: str
    journey_id: str
    contact_id: str
    email: str
    version: int
    trigger_data: dict[str, Any]
    timezone: str = send_time.DEFAULT_ZONE
    zone_fell_back: bool = False
    #: When the emails this transaction queued are due (None: now), for one mark_due.
    due: list[datetime.datetime | None] = dataclasses.field(default_factory=list)
    #: Step runs not written yet: they go with the enrollment's advance.
    runs: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    #: In a batch: the writes deferred to its end (None: write at once).
    deferred: _Deferred | None = None


@dataclasses.dataclass
class _Deferred:
    """A batch's emails and advances, written by a few statements at its end.

    An email's step run names a ``(enrollment, step id)`` key until the
    email's ledger id is known (``ids``).
    """

    emails: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    finishes: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    runs: list[tuple[Any, ...]] = dataclasses.field(default_factory=list)
    ids: dict[tuple[str, str], int] = dataclasses.field(default_factory=dict)


def claim_due(owner: str, limit: int, lease_seconds: int = LEASE_SECONDS,
              ) -> list[tuple[uuid.UUID, uuid.UUID]]:
    """Lease up to ``limit`` due enrollments to ``owner``, tenant by tenant; return their ids."""
    def claim_tenant(tenant: str, room: int) -> tuple[list[tuple[Any, Any]], bool]:
        with system_tx() as database:
            parent_rows.lock_tenant_first(database, tenant)  # NOTE: first (module docstring)
            rows = database.execute_sql(_CLAIM_SQL, {
                "owner": owner, "lease": lease_seconds, "limit": room,
                "tenant": tenant}).fetchall()
            more = len(rows) == room
            if not more:
                JOURNEYS.settle_within(database, tenant)
        return list(rows), more

    rows = JOURNEYS.claim_fairly(limit, claim_tenant)
    return [(uuid.UUID(str(tenant)), uuid.UUID(str(ident))) for tenant, ident in rows]


def _load(database: Any, tenant_id: str, enrollment_ids: list[str], owner: str) -> list[Any]:
    """Lock the enrollments ``owner`` still holds and return their rows (``_LOAD_SQL``)."""
    keys = {"tenant": tenant_id, "ids": enrollment_ids, "owner": owner}
    held = [str(row[0]) for row in database.execute_sql(_LOCK_SQL, keys).fetchall()]
    if not held:
        return []
    return database.execute_sql(_LOAD_SQL, {**keys, "ids": held}).fetchall()


def run_due(limit: int = 500, *, owner: str | None = None, max_seconds: float = 10.0,
            lease_seconds: int = LEASE_SECONDS) -> int:
    """Claim and run due enrollments until none is due, ``limit`` or time is up.

    Returns how many enrollments were run (each up to its next wait or end).
    """
    owner = owner or f"journeys:{uuid.uuid4().hex[:12]}"
    deadline = time.monotonic() + max_seconds
    done = 0
    while done < limit and time.monotonic() < deadline:
        claimed = claim_due(owner, min(CLAIM_BATCH, limit - done), lease_seconds)
        if not claimed:
            break
        by_tenant: dict[uuid.UUID, list[uuid.UUID]] = {}
        for tenant_id, enrollment_id in claimed:
            by_tenant.setdefault(tenant_id, []).append(enrollment_id)
        for tenant_id, enrollment_ids in by_tenant.items():
            for start in range(0, len(enrollment_ids), ENROLLMENTS_PER_TRANSACTION):
                run_enrollments(tenant_id, enrollment_ids[start:start + ENROLLMENTS_PER_TRANSACTION],
                                owner)
        done += len(claimed)
    return done


def run_enrollment(tenant_id: uuid.UUID, enrollment_id: uuid.UUID, owner: str) -> str | None:
    """Apply the enrollment's due steps while ``owner`` holds its lease.

    Returns the enrollment's status afterwards, or None when the lease was
    lost (another worker has it now) or the enrollment already finished.
    """
    return run_enrollments(tenant_id, [enrollment_id], owner)[enrollment_id]


def run_enrollments(tenant_id: uuid.UUID, enrollment_ids: list[uuid.UUID],
                    owner: str) -> dict[uuid.UUID, str | None]:
    """Run several enrollments of one tenant in one transaction; return each one's status.

    First all of them in one transaction without savepoints: loaded with
    one statement, and their emails, step runs and advances written at the
    end by two more (``_Deferred``), the due-tenant hint once (steps that
    read or write other rows, branches and list changes, still run one
    statement each as they come). If anything raises, that
    transaction is rolled back whole (nothing of it happened) and they run
    again one savepoint each: one that raises again is rolled back alone and
    counted as a failed try, while the others commit. If the transaction
    itself fails, nothing of it commits and every lease expires, to be
    claimed again.
    """
    try:
        with tenant_tx(tenant_id) as database:
            parent_rows.lock_tenant_first(database, tenant_id)  # NOTE: first (module docstring)
            due: list[datetime.datetime | None] = []
            loaded = {row[0]: row[1:] for row in _load(
                database, str(tenant_id), [str(i) for i in enrollment_ids], owner)}
            deferred = _Deferred()
            results = {enrollment_id: _run(database, str(tenant_id), str(enrollment_id), owner,
                                           loaded.get(_as_key(enrollment_id, loaded)), due,
                                           deferred)
                       for enrollment_id in enrollment_ids}
            _write_deferred(database, str(tenant_id), deferred)
            _mark_due(database, tenant_id, due)
            return results
    except Exception:  # NOTE: rolled back whole; one at a time finds the culprit
        log.info("a batch of %d journey enrollments failed; running them one by one",
                 len(enrollment_ids))
    return _run_one_by_one(tenant_id, enrollment_ids, owner)


def _as_key(enrollment_id: uuid.UUID, loaded: dict[Any, Any]) -> Any:
    """Return the key ``loaded`` uses for ``enrollment_id`` (a UUID or its text)."""
    return enrollment_id if enrollment_id in loaded else str(enrollment_id)


def _run_one_by_one(tenant_id: uuid.UUID, enrollment_ids: list[uuid.UUID],
                    owner: str) -> dict[uuid.UUID, str | None]:
    results: dict[uuid.UUID, str | None] = {}
    failed: list[tuple[uuid.UUID, BaseException]] = []
    with tenant_tx(tenant_id) as database:
        parent_rows.lock_tenant_first(database, tenant_id)  # NOTE: first (module docstring)
        due: list[datetime.datetime | None] = []
        for enrollment_id in enrollment_ids:
            queued = len(due)
            try:
                with database.atomic():
                    results[enrollment_id] = _run(database, str(tenant_id), str(enrollment_id),
                                                  owner, _LOAD, due)
            except Exception as ex:  # NOTE: rolled back to the savepoint: no trace
                log.exception("journey enrollment %s failed a step", enrollment_id)
                failed.append((enrollment_id, ex))
                results[enrollment_id] = "active"
                del due[queued:]
        for enrollment_id, error in failed:
            _note_failure(database, tenant_id, enrollment_id, owner, error)
        _mark_due(database, tenant_id, due)
    return results


def _mark_due(database: Any, tenant_id: uuid.UUID, due: list[datetime.datetime | None]) -> None:
    """Give the due-tenant hint once for every email the transaction queued."""
    if due:
        now_due = any(at is None for at in due)
        due_tenants.mark_due(database, tenant_id,
                             None if now_due else min(at for at in due if at is not None))


def _run(database: Any, tenant_id: str, enrollment_id: str, owner: str, found: Any,
         due: list[datetime.datetime | None], deferred: _Deferred | None = None) -> str | None:
    if found is _LOAD:
        rows = _load(database, tenant_id, [enrollment_id], owner)
        found = rows[0][1:] if rows else None
    if found is None:
        return None
    (journey_id, contact_id, version, step, trigger_data, journey_status, contact_status,
     email, contact_zone, tenant_zone, suppressed) = found
    if journey_status == "paused":
        _finish(database, tenant_id, enrollment_id, step=step, delay=PAUSED_WAIT_SECONDS,
                deferred=deferred)
        return "active"
    reason = ("journey_archived" if journey_status == "archived"
              else "suppressed" if suppressed
              else None if contact_status == "active" else f"contact_{contact_status}")
    if reason:
        _finish(database, tenant_id, enrollment_id, step=step, status="exited", reason=reason,
                deferred=deferred)
        return "exited"
    steps = _steps(database, tenant_id, str(journey_id), int(version))
    timezone, zone_fell_back = send_time.choose_zone(database, contact_zone, tenant_zone)
    position = _Position(tenant_id, enrollment_id, str(journey_id), str(contact_id), email,
                         int(version), trigger_data if isinstance(trigger_data, dict) else {},
                         timezone, zone_fell_back, due, deferred=deferred)
    index = int(step)
    while index < len(steps):
        current = steps[index]
        if current.type == "branch" and "previous_email" in current.options:
            _write_runs(database, position)  # the branch reads them
        outcome, message_id, target = _apply(database, position, current)
        position.runs.append((tenant_id, enrollment_id, index, position.journey_id,
                              position.version, current.id, outcome, message_id))
        if current.type == "exit" or target == EXIT:
            _finish(database, tenant_id, enrollment_id, step=index + 1, status="exited",
                    reason="exit_step" if current.type == "exit" else f"branch:{current.id}",
                    runs=position.runs, deferred=deferred)
            return "exited"
        index = index + 1 if target in (None, NEXT) else _index(steps, target)
        if current.type == "wait" and "until" in current.options:
            at = clock.next_time(utcnow(), current.options["until"], clock.zone(timezone))
            _finish(database, tenant_id, enrollment_id, step=index, at=at, runs=position.runs,
                    deferred=deferred)
            return "active"
        if current.type == "wait" and current.options["seconds"] > 0:
            _finish(database, tenant_id, enrollment_id, step=index,
                    delay=current.options["seconds"], runs=position.runs, deferred=deferred)
            return "active"
    _finish(database, tenant_id, enrollment_id, step=index, status="completed",
            runs=position.runs, deferred=deferred)
    return "completed"


def _write_runs(database: Any, position: _Position) -> None:
    """Write the enrollment's pending step runs now (its batch's emails first)."""
    if position.deferred is not None:
        _write_emails(database, position.deferred)
    if position.runs:
        runs = _resolved(position.runs, position.deferred)
        database.execute_sql(
            f"INSERT INTO journey_step_runs {_STEP_RUN_COLUMNS} VALUES "
            + ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(runs)),
            [value for run in runs for value in run])
        position.runs.clear()


def _resolved(runs: list[tuple[Any, ...]], deferred: _Deferred | None) -> list[tuple[Any, ...]]:
    """Return step runs with each deferred email's key replaced by its ledger id."""
    if deferred is None:
        return runs
    return [(*run[:7], deferred.ids[run[7]] if isinstance(run[7], tuple) else run[7])
            for run in runs]


def _write_emails(database: Any, deferred: _Deferred) -> None:
    """Insert the batch's deferred emails with one statement; note their ledger ids."""
    if not deferred.emails:
        return
    rows = database.execute_sql(
        "INSERT INTO messages (tenant_id, contact_id, email, kind, transport, payload, "
        "next_attempt_at) VALUES "
        + ", ".join(["(%s, %s, %s, 'journey', %s, %s::jsonb, coalesce(%s::timestamptz, now()))"]
                    * len(deferred.emails))
        + " RETURNING id, payload ->> 'enrollment_id', payload ->> 'step_id'",
        [value for email in deferred.emails for value in email]).fetchall()
    deferred.ids.update({(enrollment, step): int(ident) for ident, enrollment, step in rows})
    deferred.emails.clear()


_ADVANCE_SQL = """
UPDATE journey_enrollments e SET step = v.step, status = v.status, exit_reason = v.reason,
    next_run_at = v.next_run, lease_owner = NULL, lease_expires_at = NULL, attempts = 0,
    last_error = NULL, updated_at = now(), finished_at = v.finished
FROM (VALUES {values}) AS v (id, step, status, reason, next_run, finished)
WHERE e.tenant_id = %s AND e.id = v.id
"""


def _write_deferred(database: Any, tenant_id: str, deferred: _Deferred) -> None:
    """Write the batch's emails, then its step runs and advances with one statement."""
    _write_emails(database, deferred)
    if not deferred.finishes:
        return
    runs = _resolved(deferred.runs, deferred)
    head = ""
    if runs:
        head = (f"WITH runs AS (INSERT INTO journey_step_runs {_STEP_RUN_COLUMNS} VALUES "
                + ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(runs)) + ") ")
    values = ", ".join(["(%s::uuid, %s::int, %s::text, %s::text, %s::timestamptz, "
                        "%s::timestamptz)"] * len(deferred.finishes))
    now = _transaction_now(database)
    finishes = [_times(finish, now) for finish in deferred.finishes]
    database.execute_sql(
        head + _ADVANCE_SQL.format(values=values),
        [*(value for run in runs for value in run),
         *(value for finish in finishes for value in finish), tenant_id])
    _mark_journeys_due(database, tenant_id, finishes)


def _times(finish: tuple[Any, ...], now: datetime.datetime) -> tuple[Any, ...]:
    """(id, step, status, reason, at, delay) -> (id, step, status, reason, next run, finished).

    NOTE: the times are values, not SQL: Citus refuses now() inside CASE or
    COALESCE in an UPDATE of a distributed table.
    """
    enrollment_id, step, status, reason, at, delay = finish
    next_run = at or now + datetime.timedelta(seconds=float(delay))
    return (enrollment_id, step, status, reason, next_run, None if status == "active" else now)


def _mark_journeys_due(database: Any, tenant_id: str, finishes: list[tuple[Any, ...]]) -> None:
    """Give the journeys' due-tenant hint for the earliest enrollment still active."""
    active = [finish[4] for finish in finishes if finish[2] == "active"]
    if active:
        JOURNEYS.mark_due(database, tenant_id, min(active))


def _transaction_now(database: Any) -> datetime.datetime:
    """Return the transaction's ``now()``."""
    return database.execute_sql("SELECT now()").fetchone()[0]


def _index(steps: tuple[Step, ...], step_id: str) -> int:
    return next(i for i, step in enumerate(steps) if step.id == step_id)


def _finish(database: Any, tenant_id: str, enrollment_id: str, *, step: int,
            status: str = "active", reason: str | None = None, delay: float = 0,
            at: datetime.datetime | None = None, runs: list[tuple[Any, ...]] | None = None,
            deferred: _Deferred | None = None) -> None:
    """Move the enrollment on (due at ``at``, or ``delay`` seconds from now) and release it.

    ``runs`` (the step runs not written yet) are written by the same
    statement; in a batch (``deferred``) both wait for its end.
    """
    runs = runs or []
    if deferred is not None:
        deferred.runs.extend(runs)
        deferred.finishes.append((enrollment_id, step, status, reason, at, float(delay)))
        runs.clear()
        return
    head = ""
    if runs:
        head = (f"WITH runs AS (INSERT INTO journey_step_runs {_STEP_RUN_COLUMNS} VALUES "
                + ", ".join(["(%s, %s, %s, %s, %s, %s, %s, %s)"] * len(runs)) + ") ")
    finish = _times((enrollment_id, step, status, reason, at, delay), _transaction_now(database))
    database.execute_sql(
        head + "UPDATE journey_enrollments SET step = %s, status = %s, exit_reason = %s, "
        "next_run_at = %s, lease_owner = NULL, lease_expires_at = NULL, "
        "attempts = 0, last_error = NULL, updated_at = now(), finished_at = %s "
        "WHERE tenant_id = %s AND id = %s",
        [*(value for run in runs for value in run), *finish[1:], tenant_id, enrollment_id])
    runs.clear()
    _mark_journeys_due(database, tenant_id, [finish])


def _steps(database: Any, tenant_id: str, journey_id: str, version: int) -> tuple[Step, ...]:
    key = (tenant_id, journey_id, version)
    with _versions_lock:
        cached = _versions.get(key)
    if cached is not None:
        return cached  # versions are immutable
    (definition,) = database.execute_sql(
        "SELECT definition FROM journey_versions WHERE tenant_id = %s AND journey_id = %s "
        "AND version = %s", key).fetchone()
    steps = parse_steps(definition.get("steps"))
    with _versions_lock:
        if len(_versions) > 10_000:
            _versions.clear()
        _versions[key] = steps
    return steps


def _apply(database: Any, position: _Position,
           step: Step) -> tuple[str, int | None, str | None]:
    """Apply one step; return (outcome, ledger id, jump target)."""
    if step.type == "send_email":
        return "sent", _send_email(database, position, step), None
    if step.type == "branch" and "previous_email" in step.options:
        (matched,) = database.execute_sql(
            "SELECT EXISTS (SELECT 1 FROM events e WHERE e.tenant_id = %s AND e.message_id = ("
            " SELECT r.message_id FROM journey_step_runs r WHERE r.tenant_id = %s"
            " AND r.enrollment_id = %s AND r.message_id IS NOT NULL ORDER BY r.step DESC LIMIT 1)"
            " AND e.type = %s AND NOT e.is_machine)",
            (position.tenant_id, position.tenant_id, position.enrollment_id,
             step.options["previous_email"])).fetchone()
        arm = "then" if matched else "else"
        return arm, None, step.options[arm]
    if step.type == "branch":
        if step.condition is None:
            raise RuntimeError(f"branch step {step.id!r} has neither a condition nor previous_email")
        compiled = compile_segment(position.tenant_id, step.condition, alias="c")
        (matched,) = database.execute_sql(
            f"SELECT EXISTS (SELECT 1 FROM contacts c WHERE c.tenant_id = %s AND c.id = %s "
            f"AND {compiled.sql})",
            (position.tenant_id, position.contact_id, *compiled.params)).fetchone()
        arm = "then" if matched else "else"
        return arm, None, step.options[arm]
    if step.type in ("add_to_list", "remove_from_list"):
        return _change_list(database, position, step), None, None
    if step.type == "wait":
        return "waited", None, None
    return "exit", None, None


def _change_list(database: Any, position: _Position, step: Step) -> str:
    list_id = step.options["list_id"]
    if parent_rows.lock_lists(database, position.tenant_id, [list_id]):
        return "list_missing"
    # NOTE: stands in for the subscriptions' foreign key to contacts (0191).
    if parent_rows.lock_contacts(database, position.tenant_id, [position.contact_id]):
        return "contact_missing"
    if step.type == "remove_from_list":
        # NOTE: a removal, not the contact's unsubscribe: no suppression, no exit.
        database.execute_sql(
            "DELETE FROM subscriptions WHERE tenant_id = %s AND list_id = %s "
            "AND contact_id = %s AND status <> 'unsubscribed'",
            (position.tenant_id, list_id, position.contact_id))
        return "removed"
    # An unsubscribed contact is never put back on a list by automation.
    database.execute_sql(
        "INSERT INTO subscriptions (tenant_id, list_id, contact_id, status, consent_source, "
        "consent_at, confirmed_at) VALUES (%s, %s, %s, 'confirmed', 'journey', now(), now()) "
        "ON CONFLICT (tenant_id, list_id, contact_id) DO UPDATE "
        "SET status = 'confirmed', confirmed_at = now(), updated_at = now() "
        "WHERE subscriptions.status = 'unconfirmed'",
        (position.tenant_id, list_id, position.contact_id))
    enroll_subscribed(database, position.tenant_id, [list_id], [position.contact_id])
    return "added"


def _send_email(database: Any, position: _Position, step: Step) -> int:
    """Write the step's email to the ledger (kind 'journey'); return its id."""
    options = step.options
    payload = {
        "subject": options["subject"], "html": options["html"], "text": options["text"],
        "template_id": options["template_id"], "from_email": options["from_email"],
        "from_name": options["from_name"], "reply_to": options["reply_to"],
        "data": position.trigger_data, "journey_id": position.journey_id,
        "enrollment_id": position.enrollment_id, "step_id": step.id,
    }
    if options["template_id"]:
        # NOTE: snapshot the template: workers (system role) never read templates.
        found = database.execute_sql(
            "SELECT subject, html, text FROM templates WHERE tenant_id = %s AND id = %s",
            (position.tenant_id, options["template_id"])).fetchone()
        if found is None:
            raise LookupError(f"step {step.id}: template {options['template_id']} is gone")
        payload.update(subject=options["subject"] or found[0],
                       html=options["html"] or found[1], text=options["text"] or found[2])
    # Click tracking: the email's links are registered under the journey first.
    register_journey_links(database, position.tenant_id, position.journey_id, payload["html"])
    payload["track_links"] = True
    not_before = None
    if options.get("local_send_time"):
        # NOTE: the same SQL rule as a campaign's rows (sending.send_time).
        not_before = send_time.local_not_before(database, position.timezone,
                                                options["local_send_time"], utcnow())
        payload["timezone"] = position.timezone
        if position.zone_fell_back:
            payload["timezone_fallback"] = True
    row = (position.tenant_id, position.contact_id, position.email, DEFAULT_TRANSPORT,
           json.dumps(payload, default=str), not_before)
    position.due.append(not_before)  # the hint is given once per transaction
    if position.deferred is not None:
        position.deferred.emails.append(row)
        return (position.enrollment_id, step.id)  # type: ignore[return-value]  # a key, for now
    (ledger_id,) = database.execute_sql(
        "INSERT INTO messages (tenant_id, contact_id, email, kind, transport, payload, "
        "next_attempt_at) VALUES (%s, %s, %s, 'journey', %s, %s::jsonb, "
        "coalesce(%s::timestamptz, now())) RETURNING id", row).fetchone()
    return int(ledger_id)


def _note_failure(database: Any, tenant_id: uuid.UUID, enrollment_id: uuid.UUID, owner: str,
                  ex: BaseException) -> None:
    """Count a failed try: retry later with backoff, or exit as failed."""
    # NOTE: the times are computed here, not in the UPDATE: Citus refuses now() + an
    # interval of a column, and now() inside CASE, in an UPDATE of a distributed table.
    found = database.execute_sql(
        "SELECT attempts, now() FROM journey_enrollments "
        "WHERE tenant_id = %s AND id = %s AND lease_owner = %s AND status = 'active' FOR UPDATE",
        (str(tenant_id), str(enrollment_id), owner)).fetchone()
    if found is None:
        return
    attempts, now = int(found[0]) + 1, found[1]
    gave_up = attempts >= MAX_ATTEMPTS
    database.execute_sql(
        "UPDATE journey_enrollments SET attempts = %s, last_error = %s, "
        "lease_owner = NULL, lease_expires_at = NULL, updated_at = now(), next_run_at = %s, "
        "status = %s, exit_reason = CASE WHEN %s THEN 'failed' ELSE exit_reason END, "
        "finished_at = %s WHERE tenant_id = %s AND id = %s",
        (attempts, str(ex)[:500],
         now + datetime.timedelta(seconds=RETRY_BASE_SECONDS * 2 ** (attempts - 1)),
         "exited" if gave_up else "active", gave_up, now if gave_up else None,
         str(tenant_id), str(enrollment_id)))

