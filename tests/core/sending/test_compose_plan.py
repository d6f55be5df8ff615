"""The composer's read of a batch's contacts grows with the batch, not with the tenant."""

from __future__ import annotations

from swiftmail_core.db import tenant_tx
from swiftmail_core.sending import compose

CONTACTS = 20_000
BATCH = 200


def _contacts(tenant_id, count: int) -> list[str]:  # type: ignore[no-untyped-def]
    """Write ``count`` contacts for the tenant; return their ids in id order."""
    with tenant_tx(tenant_id) as database:
        return sorted(str(row[0]) for row in database.execute_sql(
            "INSERT INTO contacts (tenant_id, email) SELECT %s, 'c' || i || '@example.test' "
            "FROM generate_series(1, %s) AS i RETURNING id", (str(tenant_id), count)).fetchall())


def test_a_new_tenants_batch_reads_only_its_own_contacts_before_they_are_analyzed(  # type: ignore[no-untyped-def]
    tenant_a, tenant_b, owner_connection,
) -> None:
    """Regression: each batch of a new tenant's first campaign read all its contacts.

    The contacts were analyzed before the tenant had any (autovacuum has not
    come round since its import: on a big table that can take hours), so the
    planner put the tenant at one row and read the batch's contacts
    (``id = ANY``) by tenant alone, filtering them by id: every contact of the
    tenant for each batch, a campaign's reads growing with the square of its
    size. The composer now probes the primary key once per contact.
    """
    _contacts(tenant_b.id, CONTACTS // 10)
    with owner_connection.cursor() as cursor:
        cursor.execute("ANALYZE contacts")
        # NOTE: no autovacuum between the import and the campaign
        cursor.execute("ALTER TABLE contacts SET (autovacuum_enabled = false)")
    try:
        batch = _contacts(tenant_a.id, CONTACTS)[CONTACTS // 2:CONTACTS // 2 + BATCH]
        with tenant_tx(tenant_a.id) as database:
            found = compose._contacts(database, tenant_a.id, [], batch)
            (read,) = database.execute_sql(
                "SELECT coalesce(seq_tup_read, 0) + coalesce(idx_tup_fetch, 0) "
                "FROM pg_stat_xact_user_tables WHERE relname = 'contacts'").fetchone()
        assert sorted(found) == batch
        assert read <= 2 * BATCH
    finally:
        with owner_connection.cursor() as cursor:
            cursor.execute("ALTER TABLE contacts RESET (autovacuum_enabled)")
