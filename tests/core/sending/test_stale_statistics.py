"""Batches read their rows by key while the statistics do not know the tenant yet.

See ``swiftmail_core/db/by_key.py``: a new tenant is one row to the planner
until autovacuum analyzes its rows (on a big table, hours later).
"""

from __future__ import annotations

import pytest

from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.db.by_key import rows_by_key
from swiftmail_core.sending import compose, state
from swiftmail_core.tracking_ingest.drainer import tenant_ledger_rows

from .conftest import cancel_leftover_work, make_campaign, make_list

ROWS = 20_000
BATCH = 200


def _rows_read(database, table: str) -> int:  # type: ignore[no-untyped-def]
    """Rows of ``table`` this backend has read and not yet reported (scans and index fetches).

    Since PostgreSQL 15 these counters also hold earlier transactions' reads
    until the backend reports them (at most once a second): compare two readings.
    """
    (read,) = database.execute_sql(
        "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
        "FROM pg_stat_xact_user_tables WHERE relname = %s", (table,)).fetchone()
    return int(read)


@pytest.fixture
def stale_statistics(owner_connection):  # type: ignore[no-untyped-def]
    """Return a function that analyzes tables now and keeps autovacuum off them until the end."""
    analyzed: list[str] = []

    def analyze(table: str) -> None:
        with owner_connection.cursor() as cursor:
            cursor.execute(f"ANALYZE {table}")
            cursor.execute(f"ALTER TABLE {table} SET (autovacuum_enabled = false)")
        analyzed.append(table)

    yield analyze
    with owner_connection.cursor() as cursor:
        for table in analyzed:
            cursor.execute(f"ALTER TABLE {table} RESET (autovacuum_enabled)")


def _ledger(tenant_id, status: str, rows: int) -> list[int]:  # type: ignore[no-untyped-def]
    """Write ``rows`` ledger rows of one campaign for the tenant; return their ids."""
    campaign_id = make_campaign(tenant_id, [make_list(tenant_id)], transport="none")
    with tenant_tx(tenant_id) as database:
        return sorted(row[0] for row in database.execute_sql(
            "INSERT INTO messages (tenant_id, campaign_id, contact_id, email, transport, status) "
            "SELECT %s, %s, gen_random_uuid(), 'r' || i || '@example.test', 'none', %s "
            "FROM generate_series(1, %s) AS i RETURNING id",
            (str(tenant_id), str(campaign_id), status, rows)).fetchall())


def test_a_new_tenants_results_are_written_by_key_before_its_rows_are_analyzed(  # type: ignore[no-untyped-def]
    tenant_a, tenant_b, stale_statistics,
) -> None:
    """Regression: each batch of results read every ledger row of a new tenant, twice.

    The ledger was analyzed before the tenant had rows (autovacuum has not
    come round since its audience was written: on a big table that can take
    hours), so the planner put the tenant at one row. The writer's lock
    (``id = ANY``) then took the tenant's rows by tenant alone and filtered
    them by id, and its UPDATE hash-joined the batch with all of them: 20,000
    rows read twice for every 200 results here, a campaign's writes growing
    with the square of its size (docs/benchmarks.md, "The state writer's
    plans"). The writer now plans the tenant as an average one.
    """
    # The statistics know an older tenant's ledger (what else the test database
    # holds varies with the tests run before), not the new tenant's.
    _ledger(tenant_b.id, "delivered", ROWS // 10)
    stale_statistics("messages")
    try:
        batch = _ledger(tenant_a.id, "accepted", ROWS)[ROWS // 2:ROWS // 2 + BATCH]
        reports = [state.Report(tenant_id=tenant_a.id, type="delivered", ledger_id=ident,
                                source_key=f"plan-test:{ident}") for ident in batch]
        with system_tx() as database:
            applied = state.Applied()
            before = _rows_read(database, "messages")
            state._apply_tenant(database, str(tenant_a.id), reports, applied)
            read = _rows_read(database, "messages") - before
        assert applied.statuses["delivered"] == BATCH
        # The lock and the UPDATE each read the batch by key: never the tenant's ledger.
        assert read <= 3 * BATCH
    finally:
        cancel_leftover_work(tenant_a.id)
        cancel_leftover_work(tenant_b.id)


def test_a_new_tenants_opens_are_matched_to_their_messages_by_key(  # type: ignore[no-untyped-def]
    tenant_a, tenant_b, stale_statistics,
) -> None:
    """Regression: the tracking drainer read a new tenant's whole ledger for every batch of hits."""
    _ledger(tenant_b.id, "delivered", ROWS // 10)
    stale_statistics("messages")
    try:
        batch = _ledger(tenant_a.id, "delivered", ROWS)[ROWS // 2:ROWS // 2 + BATCH]
        with system_tx() as database:
            before = _rows_read(database, "messages")
            rows = tenant_ledger_rows(database, str(tenant_a.id), batch + batch[:10])
            read = _rows_read(database, "messages") - before
        assert sorted(row[1] for row in rows) == batch  # each message once
        assert read <= 2 * BATCH
    finally:
        cancel_leftover_work(tenant_a.id)
        cancel_leftover_work(tenant_b.id)


def _contacts(tenant_id, count: int) -> list[str]:  # type: ignore[no-untyped-def]
    """Write ``count`` contacts for the tenant; return their ids in id order."""
    with tenant_tx(tenant_id) as database:
        return sorted(str(row[0]) for row in database.execute_sql(
            "INSERT INTO contacts (tenant_id, email) SELECT %s, 'c' || i || '@example.test' "
            "FROM generate_series(1, %s) AS i RETURNING id", (str(tenant_id), count)).fetchall())


def test_a_new_tenants_batch_reads_only_its_own_contacts(  # type: ignore[no-untyped-def]
    tenant_a, tenant_b, stale_statistics,
) -> None:
    """Regression: each batch of a new tenant's first campaign read all its contacts.

    The composer read the batch's contacts (``id = ANY``) by tenant alone and
    filtered them by id: every contact of the tenant for each batch.
    """
    _contacts(tenant_b.id, ROWS // 10)
    stale_statistics("contacts")
    batch = _contacts(tenant_a.id, ROWS)[ROWS // 2:ROWS // 2 + BATCH]
    with tenant_tx(tenant_a.id) as database:
        before = _rows_read(database, "contacts")
        found = compose._contacts(database, tenant_a.id, [], batch)
        read = _rows_read(database, "contacts") - before
    assert sorted(found) == batch
    assert read <= 2 * BATCH


def test_only_known_id_types_are_read_by_key() -> None:
    """The id type is spliced into the SQL: anything else is refused."""
    with pytest.raises(ValueError, match="unsupported id type"):
        rows_by_key("messages", "m", id_type="text); DROP TABLE messages; --")
