"""Each migration's Citus variant leaves the schema exactly as the migration does.

Checked on plain PostgreSQL, without a Citus cluster: a scratch database is
migrated one migration at a time; where a migration has a ``.citus.sql``
variant, the variant runs first and is rolled back, and the two schemas are
compared, constraint names included (later migrations name them; the
checksum recorded is the migration's, whichever ran).
"""

from __future__ import annotations

from collections.abc import Iterator

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from swiftmail_core.db.migrate import apply, available_migrations, render
from swiftmail_core.db.statements import split_statements
from swiftmail_core.db.targets import DatabaseTargets
from tests.schema_snapshot import schema_snapshot


@pytest.fixture
def scratch_owner(targets: DatabaseTargets) -> Iterator[psycopg2.extensions.connection]:
    """A connection as the owner role to an empty database of its own."""
    database = f"{targets.database}_variants"
    admin = psycopg2.connect(targets.admin_dsn)
    admin.autocommit = True
    with admin.cursor() as cursor:
        cursor.execute(sql.SQL("CREATE DATABASE {} OWNER {}").format(
            sql.Identifier(database), sql.Identifier(targets.role_names["owner"])))
    owner = psycopg2.connect(make_dsn(**{**parse_dsn(targets.dsn("owner")), "dbname": database}))
    try:
        yield owner
    finally:
        owner.close()
        with admin.cursor() as cursor:
            cursor.execute(sql.SQL("DROP DATABASE {} WITH (FORCE)").format(
                sql.Identifier(database)))
        admin.close()


def test_every_citus_variant_leaves_the_schema_its_migration_leaves(
        scratch_owner, targets: DatabaseTargets) -> None:  # type: ignore[no-untyped-def]
    variants = 0
    for migration in available_migrations():
        with scratch_owner.cursor() as cursor:
            if migration.citus_text is not None:
                variants += 1
                for statement in split_statements(render(migration.citus_text,
                                                         targets.role_names)):
                    cursor.execute(statement)
                as_citus = schema_snapshot(cursor)
                scratch_owner.rollback()
            apply(cursor, migration, targets.role_names)
            if migration.citus_text is not None:
                assert schema_snapshot(cursor) == as_citus, migration.name
        scratch_owner.commit()
    assert variants  # 0156, 0161, 0173, 0180, 0188 at least


def test_a_citus_variant_carries_no_metadata() -> None:
    """The migration's own ``oldest-compatible-code`` line is what is recorded."""
    for migration in available_migrations():
        if migration.citus_text is not None:
            assert "-- oldest-compatible-code" not in migration.citus_text, migration.name
            assert split_statements(migration.citus_text), migration.name
