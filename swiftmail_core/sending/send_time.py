"""Send time in each recipient's zone: a ledger row's not-before, computed in SQL.

A campaign (``campaigns.local_send_time``) or a journey email step
(``local_send_time``) can go out when the recipient's clock reads a given
time. The recipient's zone is its ``timezone`` contact attribute (an IANA
name such as ``Europe/Oslo``), else the tenant's ``timezone`` setting, else
UTC. A zone PostgreSQL does not know (``pg_timezone_names``; names match
exactly) falls back to the tenant's and is counted.

The not-before is written to the row's ``next_attempt_at``, the column the
outbox already claims by (``next_attempt_at <= now()``), so the one claim
and the one scheduler hold the row until then: nothing else schedules. It is
computed by PostgreSQL (``AT TIME ZONE``) inside the statement that writes
the rows, set-based, so a million recipients never pass through Python.

The rule: the first moment at or after the reference time (a campaign's
``scheduled_at``, or when it started) at which the zone's wall clock reads
the local time. DST edges follow PostgreSQL: a local time that does not
exist on a spring-forward day is read as standard time (02:30 in a 02:00 to
03:00 gap is 03:30 summer time), and one that happens twice on a fall-back
day is the later of the two (standard time).
"""

from __future__ import annotations

import datetime
import re
import threading
import uuid
from typing import Any

#: ``HH:MM``, 24-hour clock.
LOCAL_TIME = re.compile(r"^([01][0-9]|2[0-3]):[0-5][0-9]$")
LOCAL_TIME_PATTERN = LOCAL_TIME.pattern
#: The zone when neither the contact nor the tenant names a valid one.
DEFAULT_ZONE = "UTC"

_zone_names: frozenset[str] | None = None
_zone_names_lock = threading.Lock()


def parse_local_time(value: Any) -> datetime.time:
    """Return ``HH:MM`` as a time; raise ValueError naming the expected shape."""
    if not isinstance(value, str) or not LOCAL_TIME.match(value):
        raise ValueError("must be a local time HH:MM (24-hour clock), e.g. 09:00")
    hour, minute = (int(part) for part in value.split(":"))
    return datetime.time(hour, minute)


def zone_names(database: Any) -> frozenset[str]:
    """Return the time zone names PostgreSQL knows (read once per process)."""
    global _zone_names
    with _zone_names_lock:
        if _zone_names is None:
            _zone_names = frozenset(name for (name,) in database.execute_sql(
                "SELECT name FROM pg_timezone_names").fetchall())
        return _zone_names


def is_zone(database: Any, name: Any) -> bool:
    """Return whether ``name`` is a time zone PostgreSQL knows, spelled exactly."""
    return isinstance(name, str) and name in zone_names(database)


def tenant_zone(database: Any, tenant_id: uuid.UUID | str) -> str:
    """Return the tenant's ``timezone`` setting when valid, else UTC (in the tenant's tx)."""
    found = database.execute_sql(
        "SELECT settings ->> 'timezone' FROM tenants WHERE id = %s", (str(tenant_id),)
    ).fetchone()
    name = found[0] if found else None
    return name if isinstance(name, str) and is_zone(database, name) else DEFAULT_ZONE


def choose_zone(database: Any, contact_zone: Any, tenant_setting: Any) -> tuple[str, bool]:
    """Return (the zone of one contact, whether its own zone was invalid and fell back)."""
    if is_zone(database, contact_zone):
        return contact_zone, False
    fallback = tenant_setting if is_zone(database, tenant_setting) else DEFAULT_ZONE
    return fallback, contact_zone is not None


def contact_zone_sql(attributes: str) -> str:
    """Return SQL choosing the zone of a contact whose attributes are ``attributes``.

    Parameters, in order: the known zone names (text[]) and the fallback zone.
    """
    return (f"CASE WHEN {attributes} ->> 'timezone' IN (SELECT unnest(%s::text[])) "
            f"THEN {attributes} ->> 'timezone' ELSE %s::text END")


def fell_back_sql(attributes: str) -> str:
    """Return SQL true when the contact names a zone that is not known.

    Parameter: the known zone names (text[]).
    """
    return (f"coalesce({attributes} ->> 'timezone' NOT IN (SELECT unnest(%s::text[])), "
            f"false)")


def not_before_sql(zone: str) -> str:
    """Return SQL for the first moment at or after the reference when ``zone`` reads the time.

    ``zone`` is an SQL expression without parameters (a column). Parameters,
    in order: :func:`not_before_params`.
    """
    today = f"((%s::timestamptz AT TIME ZONE {zone})::date + %s::time) AT TIME ZONE {zone}"
    tomorrow = (f"((%s::timestamptz AT TIME ZONE {zone})::date + 1 + %s::time) "
                f"AT TIME ZONE {zone}")
    return f"CASE WHEN {today} >= %s::timestamptz THEN {today} ELSE {tomorrow} END"


def not_before_params(reference: datetime.datetime | str,
                      local_time: datetime.time | str) -> list[Any]:
    """Return the parameters of :func:`not_before_sql`."""
    pair = [reference, str(local_time)]
    return [*pair, reference, *pair, *pair]


def local_not_before(database: Any, zone: str, local_time: datetime.time | str,
                     reference: datetime.datetime | str) -> datetime.datetime:
    """Return the not-before of one recipient in ``zone`` (a known zone), by the same SQL."""
    (at,) = database.execute_sql(
        f"SELECT {not_before_sql('z.zone')} FROM (SELECT %s::text AS zone) z",
        [*not_before_params(reference, local_time), zone]).fetchone()
    return at
