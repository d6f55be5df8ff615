"""The outbox claim's work grows with the batch, not with the tenant's contacts."""

from __future__ import annotations

from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.sending import due_tenants

from .conftest import add_subscribers, cancel_leftover_work, make_campaign, make_list

CONTACTS = 20_000
LIMIT = 200


def _campaign_ledger(tenant_id, owner_connection, *, stale_due: bool) -> None:  # type: ignore[no-untyped-def]
    """A sending campaign with one due ledger row per contact.

    With ``stale_due`` the statistics were taken while none of the rows was
    due (the due indexes read as empty, as after a campaign that was sent),
    else once they are.
    """
    list_id = make_list(tenant_id)
    add_subscribers(tenant_id, list_id, CONTACTS)
    campaign_id = make_campaign(tenant_id, [list_id], transport="none")
    with tenant_tx(tenant_id) as database:
        database.execute_sql("UPDATE campaigns SET status = 'sending' WHERE id = %s",
                             (str(campaign_id),))
        database.execute_sql(
            "INSERT INTO messages (tenant_id, campaign_id, contact_id, email, transport, status) "
            "SELECT c.tenant_id, %s, c.id, c.email, 'none', %s FROM contacts c ORDER BY c.id",
            (str(campaign_id), "delivered" if stale_due else "queued"))
    with owner_connection.cursor() as cursor:
        cursor.execute("ANALYZE contacts, messages")
    with tenant_tx(tenant_id) as database:
        if stale_due:
            database.execute_sql("UPDATE messages SET status = 'queued' WHERE campaign_id = %s",
                                 (str(campaign_id),))
        due_tenants.mark_due(database, tenant_id)


def _claim_reads(tenant_id, table: str) -> tuple[list, int]:  # type: ignore[no-untyped-def,type-arg]
    """Claim once in a transaction; return the rows and how many rows of ``table`` it read."""
    with system_tx() as database:
        rows = database.execute_sql(
            "SELECT * FROM swiftmail_claim_tenant(%s::uuid, %s, %s, 60)",
            (str(tenant_id), "plan-test", LIMIT)).fetchall()
        (read,) = database.execute_sql(
            "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
            "FROM pg_stat_xact_user_tables WHERE relname = %s", (table,)).fetchone()
    assert rows and rows[0][1] is not None  # it leased rows (as many as the budget gave)
    return rows, int(read)


def test_a_claim_reads_only_the_contacts_of_the_rows_it_picks(  # type: ignore[no-untyped-def]
    tenant_a, owner_connection,
) -> None:
    """Regression: each claim read every contact of the tenant.

    Picked rows are checked against their contacts (active or not). With a
    few thousand to tens of thousands of contacts the planner hash-joined the
    batch with all of them, one full read per claim: 120 µs of database CPU
    a message at 20,000 recipients against 54 µs at 5,000 (docs/benchmarks.md,
    "PostgreSQL per message"). Migration 0193 keeps the claim to one index
    probe per picked row.
    """
    _campaign_ledger(tenant_a.id, owner_connection, stale_due=False)
    try:
        _, read = _claim_reads(tenant_a.id, "contacts")
        assert read <= LIMIT
    finally:
        cancel_leftover_work(tenant_a.id)


def test_a_claim_leases_its_rows_by_primary_key_whatever_the_statistics(  # type: ignore[no-untyped-def]
    tenant_a, owner_connection,
) -> None:
    """Regression: each claim read every remaining due row of the campaign.

    The lease names its rows by id with the guard status IN ('deferred',
    'queued'); with the due indexes' statistics from a vacuum while nothing
    was due, the planner took the tenant's due rows from a due index and
    filtered them by id: 19,200 rows read for a batch of 200 at 20,000
    recipients, so a campaign's claims grew with the square of its size.
    (The ledger's statistics here are those of a tenant whose previous
    campaign was sent, taken before the new one's rows became due.)
    """
    _campaign_ledger(tenant_a.id, owner_connection, stale_due=True)
    try:
        _, read = _claim_reads(tenant_a.id, "messages")
        # The pick walks the due index (LIMIT rows), the lease and the hint read by
        # key: a few times the batch, never the campaign.
        assert read <= 4 * LIMIT
    finally:
        cancel_leftover_work(tenant_a.id)
