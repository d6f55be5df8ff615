"""Enter contacts into journeys on a trigger, and take them out.

Every function runs in the caller's ``tenant_tx`` (``database`` is its
handle), so an enrollment commits with the write that triggered it: a
confirmed subscription, an API event. A contact enters a journey at most
once (``UNIQUE (tenant_id, journey_id, contact_id, occurrence)``, occurrence
0): a trigger that fires twice enrolls once. A yearly date trigger (a
birthday) enrolls once per year: its occurrence is the anniversary's year.
"""

from __future__ import annotations

import calendar
import datetime
import json
import threading
import time
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.due_tenants import DueQueue

#: Tenants with journey positions due (a leased one is due again when its lease expires).
JOURNEYS = DueQueue(
    "journeys",
    due_sql="SELECT tenant_id, min(greatest(next_run_at, lease_expires_at)) "
            "FROM journey_enrollments WHERE status = 'active' AND next_run_at <= now() "
            "AND (lease_expires_at IS NULL OR lease_expires_at <= now()) GROUP BY tenant_id",
    next_due_sql="SELECT min(greatest(next_run_at, lease_expires_at)) FROM journey_enrollments "
                 "WHERE tenant_id = %(tenant)s AND status = 'active'",
)

_ENROLL_SQL = """
INSERT INTO journey_enrollments (tenant_id, journey_id, contact_id, version, trigger_data)
SELECT j.tenant_id, j.id, c.id, j.current_version, %(data)s::jsonb
FROM journeys j
JOIN contacts c ON c.tenant_id = j.tenant_id AND c.id = ANY (%(contacts)s::uuid[])
                AND c.status = 'active'
WHERE j.tenant_id = %(tenant)s AND j.status = 'active'
  AND j.trigger_type = %(type)s AND j.trigger_key = ANY (%(keys)s::text[])
  {extra}
ON CONFLICT (tenant_id, journey_id, contact_id, occurrence) DO NOTHING
RETURNING journey_id
"""
#: A list trigger enrolls only contacts whose subscription to that list is confirmed.
_CONFIRMED = """AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.tenant_id = j.tenant_id
      AND s.list_id::text = j.trigger_key AND s.contact_id = c.id AND s.status = 'confirmed')"""


def enroll_subscribed(database: Any, tenant_id: uuid.UUID | str, list_ids: Iterable[Any],
                      contact_ids: Iterable[Any]) -> int:
    """Enroll contacts confirmed on ``list_ids`` in the lists' active journeys.

    Call it after any write that may confirm a subscription (idempotent and
    cheap when no journey listens); returns how many enrollments were made.
    """
    lists = [str(value) for value in list_ids]
    contacts = [str(value) for value in contact_ids]
    if not lists or not contacts:
        return 0
    rows = database.execute_sql(_ENROLL_SQL.format(extra=_CONFIRMED), {
        "tenant": str(tenant_id), "type": "list_subscribed", "keys": lists,
        "contacts": contacts, "data": json.dumps({"list_ids": lists})}).fetchall()
    if rows:
        JOURNEYS.mark_due(database, tenant_id)  # runners start from the due tenants
    return len(rows)


def enroll_event(database: Any, tenant_id: uuid.UUID | str, name: str,
                 contact_id: uuid.UUID | str, data: Mapping[str, Any]) -> list[uuid.UUID]:
    """Enroll a contact in the active journeys triggered by the event ``name``.

    ``data`` is what the journey's emails see as ``data``. Returns the ids
    of the journeys the contact entered now (not those it was already in).
    """
    rows = database.execute_sql(_ENROLL_SQL.format(extra=""), {
        "tenant": str(tenant_id), "type": "event", "keys": [name],
        "contacts": [str(contact_id)],
        "data": json.dumps({"event": name, **dict(data)}, default=str)}).fetchall()
    if rows:
        JOURNEYS.mark_due(database, tenant_id)
    return [uuid.UUID(str(row[0])) for row in rows]


def exit_contact(database: Any, tenant_id: uuid.UUID | str, contact_id: uuid.UUID | str,
                 reason: str) -> int:
    """Take a contact out of every journey it is in now; return how many it left."""
    rows = database.execute_sql(
        "UPDATE journey_enrollments SET status = 'exited', exit_reason = %s, "
        "finished_at = now(), updated_at = now(), lease_owner = NULL, lease_expires_at = NULL "
        "WHERE tenant_id = %s AND contact_id = %s AND status = 'active' RETURNING 1",
        (reason, str(tenant_id), str(contact_id))).fetchall()
    return len(rows)


_DATE_SQL = """
INSERT INTO journey_enrollments (tenant_id, journey_id, contact_id, version, trigger_data,
                                 occurrence)
SELECT c.tenant_id, %(journey)s, c.id, %(version)s,
       jsonb_build_object('attribute', %(attribute)s::text,
                          'date', c.attributes ->> %(attribute)s::text{yearly_data}),
       %(occurrence)s
FROM contacts c
WHERE c.tenant_id = %(tenant)s AND c.status = 'active' AND ({dates})
ON CONFLICT (tenant_id, journey_id, contact_id, occurrence) DO NOTHING
RETURNING 1
"""
#: A yearly trigger tells the journey which anniversary it is.
_YEARLY_DATA = """,
                          'anniversary', %(target)s::text,
                          'years', %(year)s - left(c.attributes ->> %(attribute)s::text, 4)::int"""
#: The earliest year a yearly date attribute is matched in (birthdays).
FIRST_YEAR = 1900
#: How often one process looks for a yearly journey's anniversaries (a set attribute
#: enrolls within this long); a once-only date is looked for every tick.
YEARLY_CHECK_SECONDS = 300.0
_yearly_checked: dict[tuple[str, str], float] = {}
_yearly_lock = threading.Lock()


def _yearly_due(journey_id: str, target: datetime.date) -> bool:
    with _yearly_lock:
        last = _yearly_checked.get((journey_id, target.isoformat()))
    return last is None or time.monotonic() - last >= YEARLY_CHECK_SECONDS


def _yearly_done(journey_id: str, target: datetime.date) -> None:
    with _yearly_lock:
        if len(_yearly_checked) > 10_000:
            _yearly_checked.clear()
        _yearly_checked[(journey_id, target.isoformat())] = time.monotonic()


def yearly_path(attribute: str, values: list[str]) -> str:
    """Return a jsonpath true when ``attribute`` equals one of ``values``.

    One GIN index scan (``jsonb_path_ops`` extracts the alternatives as keys)
    instead of one bitmap scan per year. NOTE: ``attribute`` is checked
    (letters, digits, ``_ . -``) and ``values`` are dates we format, so
    neither can leave its quotes; the path is a bound parameter.
    """
    return f'$."{attribute}" ? (' + " || ".join(f'@ == "{value}"' for value in values) + ")"


def dates_matching(target: datetime.date, yearly: bool) -> list[str]:
    """Return the attribute values (``YYYY-MM-DD``) that fire on ``target``.

    Once: the target itself. Yearly: the same month and day in every year
    from ``FIRST_YEAR`` to the target's; on February 28 of a common year,
    also February 29 of the leap years (someone born on February 29 has a
    birthday every year, on the 28th when there is no 29th).
    """
    if not yearly:
        return [target.isoformat()]
    days = [(target.month, target.day)]
    if (target.month, target.day) == (2, 28) and not calendar.isleap(target.year):
        days.append((2, 29))
    return [datetime.date(year, month, day).isoformat()
            for year in range(FIRST_YEAR, target.year + 1) for month, day in days
            if (month, day) != (2, 29) or calendar.isleap(year)]


def enroll_date_triggers(today: datetime.date | None = None) -> int:
    """Enroll contacts whose date attribute, less ``days_before``, is today (UTC).

    Idempotent: run it every tick. A contact enters a once-only journey
    once, and a yearly journey once per anniversary year (the unique key
    holds across ticks, workers running it at once, and crashes). The
    attribute must hold a date as ``YYYY-MM-DD``, matched through the
    attributes' GIN index (a yearly trigger: one jsonpath with one
    alternative per year, looked for every ``YEARLY_CHECK_SECONDS``).
    Returns how many enrollments were made.
    """
    today = today or datetime.datetime.now(datetime.UTC).date()
    with system_tx() as database:
        journeys = database.execute_sql(
            "/* cross-tenant */ SELECT tenant_id, id, current_version, trigger_key, "
            "trigger_days_before, trigger_yearly FROM journeys "
            "WHERE status = 'active' AND trigger_type = 'date_attribute'").fetchall()
    made = 0
    for tenant_id, journey_id, version, attribute, days_before, yearly in journeys:
        target = today + datetime.timedelta(days=int(days_before))
        if yearly and not _yearly_due(str(journey_id), target):
            continue
        params: dict[str, Any] = {
            "tenant": str(tenant_id), "journey": str(journey_id), "version": version,
            "attribute": attribute, "occurrence": target.year if yearly else 0,
            "target": target.isoformat(), "year": target.year}
        if yearly:
            dates = "c.attributes @? %(path)s::jsonpath"
            params["path"] = yearly_path(attribute, dates_matching(target, True))
        else:
            dates = "c.attributes @> %(date)s::jsonb"
            params["date"] = json.dumps({attribute: target.isoformat()})
        with tenant_tx(tenant_id) as database:
            enrolled = len(database.execute_sql(_DATE_SQL.format(
                dates=dates, yearly_data=_YEARLY_DATA if yearly else ""), params).fetchall())
            if enrolled:
                JOURNEYS.mark_due(database, tenant_id)
        made += enrolled
        if yearly:
            _yearly_done(str(journey_id), target)
    return made


def exit_addresses(database: Any, addresses: Iterable[tuple[Any, str]], reason: str) -> int:
    """Take the contacts with these (tenant id, address) pairs out of every journey.

    For suppressions: the tenant is named in each pair, so the system role's
    cross-tenant writer and a tenant's own transaction can both call it.
    """
    pairs = [(str(tenant), email.lower()) for tenant, email in addresses]
    if not pairs:
        return 0
    rows = database.execute_sql(
        "UPDATE journey_enrollments e SET status = 'exited', exit_reason = %s, "
        "finished_at = now(), updated_at = now(), lease_owner = NULL, lease_expires_at = NULL "
        "FROM contacts c, unnest(%s::uuid[], %s::text[]) AS v (tenant_id, email_lower) "
        "WHERE c.tenant_id = v.tenant_id AND c.email_lower = v.email_lower "
        "AND e.tenant_id = c.tenant_id AND e.contact_id = c.id AND e.status = 'active' "
        "RETURNING 1",
        (reason, [tenant for tenant, _ in pairs], [email for _, email in pairs])).fetchall()
    return len(rows)
