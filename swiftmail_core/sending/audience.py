"""Audience resolution: a campaign's lists become its ledger, in set-based SQL.

The contacts' primary-key order is cut into ranges of ``batch_size`` ids
(one walk of the index); each range is one ``INSERT ... SELECT`` in its own
tenant transaction: the range's contacts that are active, confirmed on at
least one of the campaign's lists and not suppressed, one row per contact
(a contact is unique per address, so each address once). Ranges run on
``parallel`` connections at once. ``ON CONFLICT DO
NOTHING`` on the one-row-per-recipient index makes a re-run after a crash
harmless: resolution can always be run again until it marks the campaign.
"""

from __future__ import annotations

import uuid
from concurrent.futures import ThreadPoolExecutor

from peewee import IntegrityError

from swiftmail_core.db import tenant_tx
from swiftmail_core.errors import NotFoundError
from swiftmail_core.models import utcnow

DEFAULT_BATCH_SIZE = 50_000
_BATCH_SQL = """
WITH batch AS (
    SELECT c.id, c.email
    FROM contacts c
    WHERE c.id >= %(low)s::uuid AND (%(high)s::uuid IS NULL OR c.id < %(high)s::uuid)
      AND c.status = 'active'
      AND EXISTS (
          SELECT 1 FROM subscriptions s
          WHERE s.tenant_id = c.tenant_id AND s.contact_id = c.id
            AND s.list_id = ANY (%(lists)s::uuid[]) AND s.status = 'confirmed')
      AND NOT EXISTS (
          SELECT 1 FROM suppressions x
          WHERE x.tenant_id = c.tenant_id AND x.email_lower = c.email_lower
            AND (x.expires_at IS NULL OR x.expires_at > now()))
)
INSERT INTO messages (tenant_id, campaign_id, contact_id, email, kind, transport)
SELECT %(tenant)s::uuid, %(campaign)s::uuid, b.id, b.email, 'campaign', %(transport)s
FROM batch b ORDER BY b.id
"""
#: A re-run after a crash meets rows already written: it skips them.
_RERUN_SQL = _BATCH_SQL.rstrip() + """
ON CONFLICT (tenant_id, campaign_id, contact_id) WHERE kind = 'campaign' DO NOTHING
"""

_BOUNDARY_SQL = """
SELECT id FROM contacts WHERE id > %s::uuid ORDER BY id OFFSET %s LIMIT 1
"""

_NIL = "00000000-0000-0000-0000-000000000000"


def _ranges(tenant_id: uuid.UUID | str, batch_size: int) -> list[tuple[str, str | None]]:
    """Cut the contacts' id order into ranges of about ``batch_size`` ids."""
    bounds = [_NIL]
    with tenant_tx(tenant_id) as database:
        while True:
            row = database.execute_sql(_BOUNDARY_SQL, (bounds[-1], batch_size - 1)).fetchone()
            if row is None:
                break
            bounds.append(str(row[0]))
    return [(low, high) for low, high in zip(bounds, [*bounds[1:], None], strict=True)]


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
    with tenant_tx(tenant_id) as database:
        row = database.execute_sql(
            "SELECT list_ids::text[], transport, audience_resolved_at FROM campaigns WHERE id = %s",
            (str(campaign_id),),
        ).fetchone()
    if row is None:
        raise NotFoundError(f"no campaign {campaign_id}")
    list_ids, transport, resolved_at = row
    if resolved_at is None:
        def run(bounds: tuple[str, str | None]) -> None:
            params = {"low": bounds[0], "high": bounds[1], "lists": list_ids,
                      "tenant": str(tenant_id), "campaign": str(campaign_id),
                      "transport": transport}
            # NOTE: a plain INSERT is the fast path (no speculative insertion);
            # only a range that meets rows from an interrupted run pays for
            # ON CONFLICT.
            try:
                with tenant_tx(tenant_id) as database:
                    database.execute_sql(_BATCH_SQL, params)
            except IntegrityError:
                with tenant_tx(tenant_id) as database:
                    database.execute_sql(_RERUN_SQL, params)

        ranges = _ranges(tenant_id, batch_size)
        if parallel <= 1 or len(ranges) == 1:
            for bounds in ranges:
                run(bounds)
        else:
            with ThreadPoolExecutor(parallel, thread_name_prefix="audience") as pool:
                list(pool.map(run, ranges))
    with tenant_tx(tenant_id) as database:
        (count,) = database.execute_sql(
            "SELECT count(*) FROM messages WHERE campaign_id = %s AND kind = 'campaign'",
            (str(campaign_id),),
        ).fetchone()
        database.execute_sql(
            "UPDATE campaigns SET audience_resolved_at = coalesce(audience_resolved_at, %s), "
            "recipient_count = %s, updated_at = now() WHERE id = %s",
            (utcnow(), count, str(campaign_id)),
        )
    return int(count)
