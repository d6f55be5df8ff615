"""A migration the database refuses: one line naming it, nothing of it left."""

from __future__ import annotations

import psycopg2
import pytest

from swiftmail_core.db import migrate as migrate_module
from swiftmail_core.errors import MigrationError


def test_a_failing_migration_is_named_and_rolled_back_whole(targets, monkeypatch) -> None:
    # Regression: the CLI said "unexpected DivisionByZero: division by zero" (or a
    # Citus refusal) without naming the migration.
    shipped = migrate_module.available_migrations()
    broken = migrate_module.Migration(
        9998, "broken", "CREATE TABLE migrate_errors_broken (a integer);\nSELECT 1 / 0;\n")
    monkeypatch.setattr(migrate_module, "available_migrations", lambda: [*shipped, broken])
    with pytest.raises(MigrationError) as raised:
        migrate_module.migrate(targets)
    assert raised.value.detail == ("migration 9998_broken failed, nothing of it was applied "
                                   "(division by zero)")
    connection = psycopg2.connect(targets.dsn("owner"))
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('migrate_errors_broken'), "
                           "EXISTS (SELECT 1 FROM schema_migrations WHERE version = 9998)")
            assert cursor.fetchone() == (None, False)
    finally:
        connection.close()
