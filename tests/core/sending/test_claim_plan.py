"""The outbox claim's work grows with the batch, not with the tenant's contacts."""

from __future__ import annotations

from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.sending import due_tenants
from swiftmail_core.sending.audience import resolve_audience

from .conftest import (
    add_subscribers,
    cancel_leftover_work,
    make_campaign,
    make_list,
    park_other_tenants_work,
)

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


def _claim_reads_of(tenant_id, tables: tuple[str, ...]) -> tuple[list, dict[str, int]]:  # type: ignore[no-untyped-def,type-arg]
    """Claim once in a transaction; return the rows and how many rows of each table it read.

    One claim per measurement: a second claim right after the first may find
    the tenant's token bucket empty (it refills at the tenant's rate, 100 a
    second by default) and lease nothing.
    """
    reads = ("SELECT relname, coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
             "FROM pg_stat_xact_user_tables WHERE relname = ANY (%s)")
    with system_tx() as database:
        # NOTE: since PostgreSQL 15 these counters also hold the backend's earlier
        # transactions' reads until it reports them (at most once a second).
        before = dict(database.execute_sql(reads, (list(tables),)).fetchall())
        rows = database.execute_sql(
            "SELECT * FROM swiftmail_claim_tenant(%s::uuid, %s, %s, 60)",
            (str(tenant_id), "plan-test", LIMIT)).fetchall()
        after = dict(database.execute_sql(reads, (list(tables),)).fetchall())
    assert rows and rows[0][1] is not None  # it leased rows (as many as the budget gave)
    return rows, {table: int(after.get(table, 0)) - int(before.get(table, 0)) for table in tables}


def _claim_reads(tenant_id, table: str) -> tuple[list, int]:  # type: ignore[no-untyped-def,type-arg]
    """Claim once in a transaction; return the rows and how many rows of ``table`` it read."""
    rows, read = _claim_reads_of(tenant_id, (table,))
    return rows, read[table]


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


def test_a_new_tenants_first_claim_reads_by_key_before_its_rows_are_analyzed(  # type: ignore[no-untyped-def]
    tenant_a, owner_connection,
) -> None:
    """Regression: a tenant not in the statistics yet was claimed by reading all its rows.

    The tables were analyzed before the tenant existed (autovacuum has not
    come round since its audience was written), so the planner put it at one
    row: custom plans took the lease's rows by tenant alone (every due row
    read) and walked the tenant's contacts for each picked row (20,100
    contacts and 20,200 ledger rows for the first claim of 200 at 20,000
    recipients). Migration 0194 plans the claim's statements generically.
    """
    park_other_tenants_work(tenant_a.id)
    tables = ("contacts", "messages", "subscriptions")
    with owner_connection.cursor() as cursor:
        cursor.execute(f"ANALYZE {', '.join(tables)}")
        for table in tables:  # NOTE: no autovacuum between the audience and the claim
            cursor.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
    try:
        list_id = make_list(tenant_a.id)
        with tenant_tx(tenant_a.id) as database:  # NOTE: add_subscribers' IN list is
            # planned for the one row the stale statistics promise: minutes at 20,000.
            database.execute_sql(
                "INSERT INTO contacts (tenant_id, email) SELECT %s, 'new' || i || '@example.test' "
                "FROM generate_series(1, %s) AS i", (str(tenant_a.id), CONTACTS))
            database.execute_sql(
                "INSERT INTO subscriptions (tenant_id, list_id, contact_id, status) "
                "SELECT tenant_id, %s, id, 'confirmed' FROM contacts WHERE tenant_id = %s",
                (str(list_id), str(tenant_a.id)))
        campaign_id = make_campaign(tenant_a.id, [list_id], transport="none")
        with tenant_tx(tenant_a.id) as database:
            database.execute_sql("UPDATE campaigns SET status = 'sending' WHERE id = %s",
                                 (str(campaign_id),))
        assert resolve_audience(tenant_a.id, campaign_id) == CONTACTS
        _, read = _claim_reads_of(tenant_a.id, ("contacts", "messages"))
        assert read["contacts"] <= LIMIT
        assert read["messages"] <= 4 * LIMIT
    finally:
        with owner_connection.cursor() as cursor:
            for table in tables:
                cursor.execute(f"ALTER TABLE {table} RESET (autovacuum_enabled)")
        cancel_leftover_work(tenant_a.id)
