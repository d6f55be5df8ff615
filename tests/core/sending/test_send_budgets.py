"""Every tenant's send_budgets row: create_tenant writes it, migration 0195 for older tenants."""

from __future__ import annotations

from swiftmail_core.db import system_tx
from swiftmail_core.db.migrate import apply, available_migrations

_ROW = ("SELECT tokens, refilled_at, day, day_count, refilled_at = now(), day = current_date "
        "FROM send_budgets WHERE tenant_id = %s")


def test_a_new_tenant_starts_with_a_full_budget(tenant_a) -> None:  # type: ignore[no-untyped-def]
    with system_tx() as database:
        rate = database.execute_sql("SELECT send_rate_per_second FROM tenants WHERE id = %s",
                                    (str(tenant_a.id),)).fetchone()[0]
        row = database.execute_sql(
            "SELECT tokens, day = current_date, day_count FROM send_budgets "
            "WHERE tenant_id = %s", (str(tenant_a.id),)).fetchall()
    assert row == [(float(rate), True, 0)]


def test_migration_0195_writes_missing_budget_rows_and_keeps_the_others(
        targets, owner_connection, tenant_a, tenant_b) -> None:  # type: ignore[no-untyped-def]
    migration = next(m for m in available_migrations() if m.version == 195)
    older, sent = str(tenant_a.id), str(tenant_b.id)
    with owner_connection.cursor() as cursor:
        # One transaction, rolled back: the shared test database keeps its rows.
        cursor.execute("BEGIN")
        cursor.execute("ALTER TABLE send_budgets NO FORCE ROW LEVEL SECURITY")
        # A tenant created before create_tenant wrote the row, with a rate of its own.
        cursor.execute("DELETE FROM send_budgets WHERE tenant_id = %s", (older,))
        cursor.execute("UPDATE tenants SET send_rate_per_second = 7 WHERE id = %s", (older,))
        # A tenant that sent: its bucket is partly spent, yesterday's count still there.
        cursor.execute(
            "UPDATE send_budgets SET tokens = 1.5, refilled_at = now() - interval '1 hour', "
            "day = current_date - 1, day_count = 42 WHERE tenant_id = %s", (sent,))
        cursor.execute(_ROW, (sent,))
        before = cursor.fetchone()
        cursor.execute("ALTER TABLE send_budgets FORCE ROW LEVEL SECURITY")

        apply(cursor, migration, targets.role_names)

        cursor.execute("SELECT relforcerowsecurity FROM pg_class "
                       "WHERE oid = 'send_budgets'::regclass")
        forced = cursor.fetchone()[0]
        cursor.execute("ALTER TABLE send_budgets NO FORCE ROW LEVEL SECURITY")
        cursor.execute(_ROW, (older,))
        written = cursor.fetchall()
        cursor.execute(_ROW, (sent,))
        kept = cursor.fetchone()
        cursor.execute("ROLLBACK")
    assert forced is True
    # What create_tenant writes: a full bucket at the tenant's rate, the defaults else.
    assert [(tokens, day_count, now, today) for tokens, _, _, day_count, now, today
            in written] == [(7.0, 0, True, True)]
    assert kept == before
