"""Audience resolution: a campaign's lists and segments become its ledger, set-based.

The contacts' primary-key order is cut into ranges of ``batch_size`` ids
(one walk of the index); each range is one ``INSERT ... SELECT`` in its own
tenant transaction: the range's contacts that are active, confirmed on at
least one of the campaign's lists or matching one of its segments (compiled
by ``swiftmail_core.segments``, never tenant SQL), engaged recently when the
campaign has a sunset, and not suppressed, one row per contact
(a contact is unique per address, so each address once). Ranges run on
``parallel`` connections at once. ``ON CONFLICT DO
NOTHING`` on the one-row-per-recipient index makes a re-run after a crash
harmless: resolution can always be run again until it marks the campaign.

An A/B tested campaign (``swiftmail_core.ab_tests``) splits each range in
the same statement: its contacts are drawn in random order, the first
``ab_test_percent`` of them (rounded at random, so the share holds on
average over any number of ranges) are dealt round robin to the variants
from a random starting variant and queued with ``variant`` set; the rest
are written ``waiting``, out of the due set, until the winner is chosen.
A range is one transaction, so a recipient is drawn once.

A campaign with a ``local_send_time`` (``swiftmail_core.sending.send_time``)
gets each row's ``next_attempt_at`` computed in the same statement, from the
contact's zone: the outbox claims a row only once it is due, so the campaign
spreads over the day with nothing held in memory. Recipients whose zone
attribute is not a known zone get the tenant's, and each range adds how many
to ``campaigns.timezone_fallbacks`` in its own transaction (counted once, as
only rows the range actually wrote count).

Each transaction that writes first locks the tenant's row ``FOR KEY SHARE``,
which stands in for the ledger rows' foreign key to tenants (0197) and which
the due-tenant hint's foreign key would take later:
``swiftmail tenant delete`` locks the tenant and then, cascading, its
campaigns, and a transaction holding the campaign before the tenant
deadlocked with it. One statement per range, none per row; on Citus no
lock (``parent_rows.lock_tenant_first`` says why).
"""

from __future__ import annotations

import dataclasses
import datetime
import math
import random
import uuid
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from peewee import IntegrityError
from psycopg2.extras import execute_values

from swiftmail_core import parent_rows
from swiftmail_core.db import is_distributed, tenant_tx
from swiftmail_core.errors import NotFoundError
from swiftmail_core.models import utcnow
from swiftmail_core.segments.compiler import CompiledSegment, compile_segment
from swiftmail_core.segments.definition import parse_definition
from swiftmail_core.sending import due_tenants, send_time

DEFAULT_BATCH_SIZE = 50_000
#: The range's bounds are repeated on the subscriptions: the planner then reads only
#: the range's subscriptions (not every subscription of the lists once per range).
_ON_LISTS = """EXISTS (
          SELECT 1 FROM subscriptions s
          WHERE s.tenant_id = c.tenant_id AND s.contact_id = c.id
            AND s.list_id = ANY (%s::uuid[]) AND s.status = 'confirmed'
            AND s.contact_id >= %s::uuid AND (%s::uuid IS NULL OR s.contact_id < %s::uuid))"""
# Sunset: added more than N days ago and no open or click in the last N days: skipped.
_SUNSET = """(c.created_at >= now() - make_interval(days => %s) OR EXISTS (
          SELECT 1 FROM events e
          WHERE e.tenant_id = c.tenant_id AND e.contact_id = c.id
            AND e.type IN ('opened', 'clicked')
            AND e.occurred_at >= now() - make_interval(days => %s)))"""
_SELECT_SQL = """
SELECT c.id, c.email, now() AS not_before, false AS zone_fallback
FROM contacts c
WHERE c.tenant_id = %s::uuid AND c.id >= %s::uuid AND (%s::uuid IS NULL OR c.id < %s::uuid)
  AND c.status = 'active'
  AND ({audience})
  AND {sunset}
  AND NOT EXISTS (
      SELECT 1 FROM suppressions x
      WHERE x.tenant_id = c.tenant_id AND x.email_lower = c.email_lower
        AND (x.expires_at IS NULL OR x.expires_at > now()))
"""
#: A local send time: each contact's zone (OFFSET 0 keeps it computed once a row),
#: then the first moment its clock reads the campaign's local time.
_LOCAL_SELECT_SQL = """
SELECT z.id, z.email, {not_before} AS not_before, z.zone_fallback
FROM ({zoned} OFFSET 0) z
"""
_BATCH_SQL = """
WITH batch AS ({select})
"""
_INSERT_SQL = """
INSERT INTO messages (tenant_id, campaign_id, contact_id, email, kind, transport,
                      next_attempt_at)
SELECT %s::uuid, %s::uuid, b.id, b.email, 'campaign', %s, b.not_before
FROM batch b ORDER BY b.id
"""
#: How many of the rows a range wrote fell back to the tenant's zone, and how many it wrote.
_COUNT_FALLBACKS_SQL = """
SELECT count(*) FILTER (WHERE b.zone_fallback), count(*)
FROM inserted i JOIN batch b ON b.id = i.contact_id
"""
#: An A/B test's range: a random draw, the test share dealt to the variants, the rest waiting.
_AB_INSERT_SQL = """
, drawn AS (
    SELECT b.id, b.email, b.not_before, row_number() OVER (ORDER BY random()) - 1 AS n,
           floor(count(*) OVER () * %s / 100.0 + %s) AS quota
    FROM batch b
)
INSERT INTO messages (tenant_id, campaign_id, contact_id, email, kind, transport, status, variant,
                      next_attempt_at)
SELECT %s::uuid, %s::uuid, d.id, d.email, 'campaign', %s,
       CASE WHEN d.n < d.quota THEN 'queued' ELSE 'waiting' END,
       CASE WHEN d.n < d.quota THEN (%s::text[])[(1 + mod(d.n + %s, %s))::int] END,
       d.not_before
FROM drawn d ORDER BY d.id
"""
#: On Citus the rows go through the client: an INSERT ... SELECT whose SELECT
#: has correlated subqueries under row-level security is refused there (and
#: the coordinator's fallback, COPY, is refused with row-level security).
_VALUES_SQL = """
INSERT INTO messages (tenant_id, campaign_id, contact_id, email, kind, transport, status, variant,
                      next_attempt_at)
VALUES %s
"""
#: A re-run after a crash meets rows already written: it skips them.
_RERUN = """
ON CONFLICT (tenant_id, campaign_id, contact_id) WHERE kind = 'campaign' DO NOTHING
"""


@dataclasses.dataclass(frozen=True)
class LocalSendTime:
    """A campaign's local send time: the clock time, its reference and the zones."""

    local_time: str
    reference: datetime.datetime
    fallback_zone: str
    zone_names: list[str]


@dataclasses.dataclass(frozen=True)
class Audience:
    """Who a campaign goes to: its lists, its segments (compiled), its sunset."""

    tenant_id: str
    campaign_id: str
    transport: str
    list_ids: list[str]
    segments: list[CompiledSegment]
    sunset_days: int | None
    variants: list[str] = dataclasses.field(default_factory=list)
    test_percent: int | None = None
    send_time: LocalSendTime | None = None

    def select(self, low: str, high: str | None) -> tuple[str, list[Any]]:
        """Return the SELECT of one id range (id, email, not_before, zone_fallback) and its parameters."""
        parts, params = [], []
        if self.list_ids:
            parts.append(_ON_LISTS)
            params.extend([self.list_ids, low, high, high])
        for segment in self.segments:
            parts.append(segment.sql)
            params.extend(segment.params)
        sunset = "true"
        sunset_params: list[Any] = []
        if self.sunset_days:
            sunset, sunset_params = _SUNSET, [self.sunset_days, self.sunset_days]
        sql = _SELECT_SQL.format(audience=" OR ".join(parts) or "false", sunset=sunset)
        where = [self.tenant_id, low, high, high, *params, *sunset_params]
        local = self.send_time
        if local is None:
            return sql, where
        zoned = sql.replace(
            "now() AS not_before, false AS zone_fallback",
            f"{send_time.contact_zone_sql('c.attributes')} AS zone, "
            f"{send_time.fell_back_sql('c.attributes')} AS zone_fallback", 1)
        return (_LOCAL_SELECT_SQL.format(not_before=send_time.not_before_sql("z.zone"),
                                         zoned=zoned.strip()),
                [*send_time.not_before_params(local.reference, local.local_time),
                 local.zone_names, local.fallback_zone, local.zone_names, *where])

    def batch(self, low: str, high: str | None, *, rerun: bool = False) -> tuple[str, list[Any]]:
        """Return the INSERT of one id range of the audience and its parameters.

        With a local send time the statement answers how many of the rows it
        wrote fell back to the tenant's zone and how many it wrote (one row).
        """
        select, head = self.select(low, high)
        sql = _BATCH_SQL.format(select=select).rstrip()
        if self.variants and self.test_percent:
            # NOTE: a random fraction rounds each range's share up or down, so the
            # test share holds on average; a random first variant spreads the odd ones.
            insert = _AB_INSERT_SQL.rstrip()
            params = [*head, self.test_percent, random.random(),
                      self.tenant_id, self.campaign_id, self.transport, self.variants,
                      random.randrange(len(self.variants)), len(self.variants)]
        else:
            insert = _INSERT_SQL.rstrip()
            params = [*head, self.tenant_id, self.campaign_id, self.transport]
        insert += _RERUN.rstrip() if rerun else ""
        if self.send_time is None:
            return sql + insert, params
        # The INSERT becomes a CTE so the statement can count what it wrote.
        head_cte, _, statement = insert.partition("INSERT INTO")
        return (sql + head_cte + ", inserted AS (INSERT INTO" + statement
                + " RETURNING contact_id)" + _COUNT_FALLBACKS_SQL.rstrip(), params)

    def insert_through_client(self, database: Any, low: str, high: str | None, *,
                              rerun: bool = False) -> tuple[int, int]:
        """Write one id range by selecting it and inserting the rows (the Citus path).

        An A/B test's draw is the same as ``batch``'s, made here: a random
        order, the test share (rounded at random) dealt to the variants in
        turn from a random first one, the rest ``waiting``. Returns how many
        of the rows written fell back to the tenant's zone, and how many it wrote.
        """
        rows = sorted(database.execute_sql(*self.select(low, high)).fetchall(),
                      key=lambda row: str(row[0]))
        if not rows:
            return 0, 0
        draw: dict[Any, tuple[str, str | None]] = {}
        if self.variants and self.test_percent:
            order = random.sample(range(len(rows)), len(rows))
            quota = math.floor(len(rows) * self.test_percent / 100.0 + random.random())
            first = random.randrange(len(self.variants))
            for n, index in enumerate(order):
                draw[rows[index][0]] = (
                    ("queued", self.variants[(n + first) % len(self.variants)]) if n < quota
                    else ("waiting", None))
        written = execute_values(
            database.cursor(),
            _VALUES_SQL.rstrip() + (_RERUN if rerun else "").rstrip() + " RETURNING contact_id",
            [(self.tenant_id, self.campaign_id, str(contact), email, "campaign", self.transport,
              *draw.get(contact, ("queued", None)), not_before)
             for contact, email, not_before, _ in rows],
            template="(%s::uuid, %s::uuid, %s::uuid, %s, %s, %s, %s, %s, %s::timestamptz)",
            page_size=5000, fetch=True)
        fell_back = {str(contact) for contact, _, _, fallback in rows if fallback}
        return sum(1 for (contact,) in written if str(contact) in fell_back), len(written)


def load_audience(tenant_id: uuid.UUID | str, campaign_id: uuid.UUID | str) -> Audience | None:
    """Return the campaign's audience, or None when it is already resolved."""
    with tenant_tx(tenant_id) as database:
        row = database.execute_sql(
            "SELECT list_ids::text[], segment_ids::text[], sunset_days, transport, "
            "audience_resolved_at, ab_test_percent, local_send_time, "
            "coalesce(scheduled_at, started_at, now()) FROM campaigns "
            "WHERE tenant_id = %s AND id = %s", (str(tenant_id), str(campaign_id)),
        ).fetchone()
        if row is None:
            raise NotFoundError(f"no campaign {campaign_id}")
        (list_ids, segment_ids, sunset_days, transport, resolved_at, test_percent,
         local_time, reference) = row
        if resolved_at is not None:
            return None
        variants = [key for (key,) in database.execute_sql(
            "SELECT key FROM campaign_variants WHERE tenant_id = %s AND campaign_id = %s "
            "ORDER BY key", (str(tenant_id), str(campaign_id)))] if test_percent else []
        definitions = [definition for (definition,) in database.execute_sql(
            "SELECT definition FROM segments WHERE tenant_id = %s AND id = ANY (%s::uuid[]) "
            "ORDER BY id", (str(tenant_id), list(segment_ids or [])))]
        local = None
        if local_time:
            local = LocalSendTime(local_time, reference, send_time.tenant_zone(database, tenant_id),
                                  sorted(send_time.zone_names(database)))
    segments = [compile_segment(tenant_id, parse_definition(d)) for d in definitions]
    return Audience(str(tenant_id), str(campaign_id), transport, list(list_ids or []),
                    segments, sunset_days, variants, test_percent, local)


_BOUNDARY_SQL = """
SELECT id FROM contacts WHERE tenant_id = %s AND id > %s::uuid ORDER BY id OFFSET %s LIMIT 1
"""

_NIL = "00000000-0000-0000-0000-000000000000"


def _ranges(tenant_id: uuid.UUID | str, batch_size: int) -> list[tuple[str, str | None]]:
    """Cut the contacts' id order into ranges of about ``batch_size`` ids."""
    bounds = [_NIL]
    with tenant_tx(tenant_id) as database:
        while True:
            row = database.execute_sql(_BOUNDARY_SQL,
                                       (str(tenant_id), bounds[-1], batch_size - 1)).fetchone()
            if row is None:
                break
            bounds.append(str(row[0]))
    return [(low, high) for low, high in zip(bounds, [*bounds[1:], None], strict=True)]


def _has_ledger(tenant_id: uuid.UUID | str, campaign_id: uuid.UUID | str) -> bool:
    """Return True when the campaign already has ledger rows (an interrupted earlier run)."""
    with tenant_tx(tenant_id) as database:
        return bool(database.execute_sql(
            "SELECT EXISTS (SELECT 1 FROM messages WHERE tenant_id = %s AND campaign_id = %s "
            "AND kind = 'campaign')", (str(tenant_id), str(campaign_id))).fetchone()[0])


def resolve_audience(
    tenant_id: uuid.UUID | str,
    campaign_id: uuid.UUID | str,
    *,
    batch_size: int = DEFAULT_BATCH_SIZE,
    parallel: int = 2,
) -> int:
    """Write the campaign's ledger rows in batches; return how many it has.

    Idempotent: rows already written are kept. Marks the campaign's
    ``audience_resolved_at`` and ``recipient_count`` when done.
    """
    audience = load_audience(tenant_id, campaign_id)
    distributed = is_distributed()
    written: list[tuple[int, bool]] = []
    fresh = audience is not None and not _has_ledger(tenant_id, campaign_id)
    if audience is not None:
        def run(bounds: tuple[str, str | None]) -> tuple[int, bool]:
            """Write one range; return how many rows it wrote and whether it met earlier ones."""
            # NOTE: a plain INSERT is the fast path (no speculative insertion);
            # only a range that meets rows from an interrupted run pays for
            # ON CONFLICT.
            for rerun in (False, True):
                try:
                    with tenant_tx(tenant_id) as database:
                        parent_rows.lock_tenant_first(database, tenant_id)  # NOTE: first (module docstring)
                        # NOTE: stands in for the per-row foreign key (0189):
                        # the campaign cannot go while this range writes.
                        if not parent_rows.lock_campaign(database, tenant_id, campaign_id):
                            raise NotFoundError(f"no campaign {campaign_id}")
                        if distributed:
                            fell_back, count = audience.insert_through_client(
                                database, *bounds, rerun=rerun)
                        else:
                            cursor = database.execute_sql(*audience.batch(*bounds, rerun=rerun))
                            fell_back, count = (cursor.fetchone() if audience.send_time
                                                else (0, cursor.rowcount))
                        if fell_back:
                            database.execute_sql(
                                "UPDATE campaigns SET timezone_fallbacks = timezone_fallbacks + %s "
                                "WHERE tenant_id = %s AND id = %s",
                                (fell_back, str(tenant_id), str(campaign_id)))
                    return int(count), rerun
                except IntegrityError:
                    if rerun:
                        raise
            raise AssertionError("unreachable")

        ranges = _ranges(tenant_id, batch_size)
        if parallel <= 1 or len(ranges) == 1:
            written = [run(bounds) for bounds in ranges]
        else:
            with ThreadPoolExecutor(parallel, thread_name_prefix="audience") as pool:
                written = list(pool.map(run, ranges))
    with tenant_tx(tenant_id) as database:
        if not parent_rows.lock_tenant_first(database, tenant_id):  # NOTE: first (module docstring)
            raise NotFoundError(f"no tenant {tenant_id}")
        if fresh and not any(reran for _, reran in written):
            # NOTE: the ledger was empty and every range was written whole by
            # this call, so the ranges' counts are the ledger's (counting it
            # again would read every row just written).
            count = sum(rows for rows, _ in written)
        else:
            (count,) = database.execute_sql(
                "SELECT count(*) FROM messages WHERE tenant_id = %s AND campaign_id = %s "
                "AND kind = 'campaign'", (str(tenant_id), str(campaign_id)),
            ).fetchone()
        database.execute_sql(
            "UPDATE campaigns SET audience_resolved_at = coalesce(audience_resolved_at, %s), "
            "recipient_count = %s, updated_at = now() WHERE tenant_id = %s AND id = %s",
            (utcnow(), count, str(tenant_id), str(campaign_id)),
        )
        if count and audience is not None and audience.send_time is not None:
            # NOTE: with a local send time the first row may be due hours from now.
            (first_due,) = database.execute_sql(
                "SELECT min(next_attempt_at) FROM messages WHERE tenant_id = %s "
                "AND campaign_id = %s AND status IN ('queued', 'deferred')",
                (str(tenant_id), str(campaign_id))).fetchone()
            due_tenants.mark_due(database, tenant_id, first_due)
        elif count:
            due_tenants.mark_due(database, tenant_id)
    return int(count)
