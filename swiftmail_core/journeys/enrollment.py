"""Enter contacts into journeys on a trigger, and take them out.

Every function runs in the caller's ``tenant_tx`` (``database`` is its
handle), so an enrollment commits with the write that triggered it: a
confirmed subscription, an API event. A contact enters a journey at most
once (``UNIQUE (tenant_id, journey_id, contact_id)``): a trigger that fires
twice enrolls once.
"""

from __future__ import annotations

import datetime
import json
import uuid
from collections.abc import Iterable, Mapping
from typing import Any

from swiftmail_core.db import system_tx, tenant_tx

_ENROLL_SQL = """
INSERT INTO journey_enrollments (tenant_id, journey_id, contact_id, version, trigger_data)
SELECT j.tenant_id, j.id, c.id, j.current_version, %(data)s::jsonb
FROM journeys j
JOIN contacts c ON c.tenant_id = j.tenant_id AND c.id = ANY (%(contacts)s::uuid[])
                AND c.status = 'active'
WHERE j.tenant_id = %(tenant)s AND j.status = 'active'
  AND j.trigger_type = %(type)s AND j.trigger_key = ANY (%(keys)s::text[])
  {extra}
ON CONFLICT (tenant_id, journey_id, contact_id) DO NOTHING
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
INSERT INTO journey_enrollments (tenant_id, journey_id, contact_id, version, trigger_data)
SELECT c.tenant_id, %(journey)s, c.id, %(version)s,
       jsonb_build_object('attribute', %(attribute)s::text, 'date', %(date)s::text)
FROM contacts c
WHERE c.tenant_id = %(tenant)s AND c.status = 'active'
  AND c.attributes @> jsonb_build_object(%(attribute)s::text, %(date)s::text)
ON CONFLICT (tenant_id, journey_id, contact_id) DO NOTHING
RETURNING 1
"""


def enroll_date_triggers(today: datetime.date | None = None) -> int:
    """Enroll contacts whose date attribute, less ``days_before``, is today (UTC).

    Idempotent: run it every tick; a contact enters each journey once. The
    attribute must hold a date as ``YYYY-MM-DD`` (matched through the
    attributes' GIN index). Returns how many enrollments were made.
    """
    today = today or datetime.datetime.now(datetime.UTC).date()
    with system_tx() as database:
        journeys = database.execute_sql(
            "/* cross-tenant */ SELECT tenant_id, id, current_version, trigger_key, "
            "trigger_days_before FROM journeys "
            "WHERE status = 'active' AND trigger_type = 'date_attribute'").fetchall()
    made = 0
    for tenant_id, journey_id, version, attribute, days_before in journeys:
        target = today + datetime.timedelta(days=int(days_before))
        with tenant_tx(tenant_id) as database:
            made += len(database.execute_sql(_DATE_SQL, {
                "tenant": str(tenant_id), "journey": str(journey_id), "version": version,
                "attribute": attribute, "date": target.isoformat()}).fetchall())
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
