"""The state writer's work grows with its batch, not with the tenant's ledger."""

from __future__ import annotations

from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.sending import state

from .conftest import cancel_leftover_work, make_campaign, make_list

ROWS = 20_000
BATCH = 200


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
    tenant_a, tenant_b, owner_connection,
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
    with owner_connection.cursor() as cursor:
        cursor.execute("ANALYZE messages")
        # NOTE: no autovacuum between the audience and the results
        cursor.execute("ALTER TABLE messages SET (autovacuum_enabled = false)")
    try:
        batch = _ledger(tenant_a.id, "accepted", ROWS)[ROWS // 2:ROWS // 2 + BATCH]
        reports = [state.Report(tenant_id=tenant_a.id, type="delivered", ledger_id=ident,
                                source_key=f"plan-test:{ident}") for ident in batch]
        with system_tx() as database:
            applied = state.Applied()
            state._apply_tenant(database, str(tenant_a.id), reports, applied)
            (read,) = database.execute_sql(
                "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
                "FROM pg_stat_xact_user_tables WHERE relname = 'messages'").fetchone()
        assert applied.statuses["delivered"] == BATCH
        # The lock and the UPDATE each read the batch by key: never the tenant's ledger.
        assert read <= 3 * BATCH
    finally:
        with owner_connection.cursor() as cursor:
            cursor.execute("ALTER TABLE messages RESET (autovacuum_enabled)")
        cancel_leftover_work(tenant_a.id)
        cancel_leftover_work(tenant_b.id)
