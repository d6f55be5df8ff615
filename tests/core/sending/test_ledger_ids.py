"""Ledger ids: each connection takes a block of its own (0199, docs/architecture.md "Ledger ids")."""

from __future__ import annotations

import psycopg2

from swiftmail_core.db.connection import TENANT_SETTING


def _insert_one(connection, tenant_id: str) -> int:  # type: ignore[no-untyped-def]
    with connection, connection.cursor() as cursor:
        cursor.execute("SELECT set_config(%s, %s, true)", (TENANT_SETTING, tenant_id))
        cursor.execute(
            "INSERT INTO messages (tenant_id, email, kind, transport) "
            "VALUES (%s, 'r@x.test', 'transactional', 'none') RETURNING id", (tenant_id,))
        return int(cursor.fetchone()[0])


def test_two_connections_writing_by_turns_append_to_blocks_of_their_own(
        tenant_a, targets) -> None:  # type: ignore[no-untyped-def]
    # Regression (audience resolution, issue #16): with the identity's cache
    # of one, two writers took alternate ids and so fought over the same
    # right-most B-tree pages of the ledger's primary key and campaign index.
    tenant = str(tenant_a.id)
    first, second = (psycopg2.connect(targets.dsn("app")) for _ in range(2))
    try:
        ids = [_insert_one(connection, tenant) for connection in (first, second, first, second)]
    finally:
        first.close()
        second.close()
    assert ids[2] == ids[0] + 1 and ids[3] == ids[1] + 1
    assert abs(ids[1] - ids[0]) >= 1000
