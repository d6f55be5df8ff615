"""Tenant isolation, proven as the app role against real PostgreSQL.

(1) A reads, updates and deletes nothing of B's, for every tenant table;
(2) with no tenant set, selects return nothing and inserts fail;
(3) writing another tenant's id is refused;
(4) 2,000 interleaved A/B transactions over one pooled connection never see
    the other tenant's rows and leave no setting behind;
(5) the posture audit passes, and fails on a table that breaks the rules.
"""

from __future__ import annotations

import uuid

import peewee
import psycopg2
import pytest
from psycopg2 import errors

from swiftmail_core import db
from swiftmail_core.db import app_db, tenant_tx
from swiftmail_core.db.audit import audit, failures
from swiftmail_core.errors import TenantIsolationError

# One minimal row per tenant table, in dependency order. %(t)s is the tenant.
SEED = {
    "memberships": None,  # needs a global user; seeded by the system role below
    "api_keys": "INSERT INTO api_keys (tenant_id, lookup_id, secret_hash, role) "
    "VALUES (%(t)s, %(u)s, '\\x00', 'viewer')",
    "contacts": "INSERT INTO contacts (tenant_id, id, email) VALUES (%(t)s, %(c)s, %(u)s || '@example.com')",
    "lists": "INSERT INTO lists (tenant_id, id, name) VALUES (%(t)s, %(l)s, 'list')",
    "subscriptions": "INSERT INTO subscriptions (tenant_id, list_id, contact_id) VALUES (%(t)s, %(l)s, %(c)s)",
    "templates": "INSERT INTO templates (tenant_id, name) VALUES (%(t)s, 'template')",
    "sending_domains": "INSERT INTO sending_domains (tenant_id, domain, dkim_selector, "
    "dkim_private_key_encrypted, dkim_public_key) VALUES (%(t)s, %(u)s || '.example.com', 's1', '\\x00', 'k')",
    "campaigns": "INSERT INTO campaigns (tenant_id, id, name) VALUES (%(t)s, %(k)s, 'campaign')",
    "messages": "INSERT INTO messages (tenant_id, campaign_id, contact_id, email) "
    "VALUES (%(t)s, %(k)s, %(c)s, 'x@example.com')",
    "links": "INSERT INTO links (tenant_id, campaign_id, url) VALUES (%(t)s, %(k)s, 'https://example.com/')",
    "events": "INSERT INTO events (tenant_id, type, campaign_id) VALUES (%(t)s, 'opened', %(k)s)",
    "campaign_rollups": "INSERT INTO campaign_rollups (tenant_id, campaign_id, bucket, metric, value) "
    "VALUES (%(t)s, %(k)s, date_trunc('hour', now()), 'opened.human', 1)",
    "suppressions": "INSERT INTO suppressions (tenant_id, email_lower, reason) VALUES (%(t)s, %(u)s || '@x.test', 'manual')",
    "webhooks": "INSERT INTO webhooks (tenant_id, id, url, secret_encrypted) "
    "VALUES (%(t)s, %(w)s, 'https://example.com/hook', '\\x00')",
    "webhook_deliveries": "INSERT INTO webhook_deliveries (tenant_id, webhook_id, event_type, payload) "
    "VALUES (%(t)s, %(w)s, 'opened', '{}')",
    "idempotency_keys": "INSERT INTO idempotency_keys (tenant_id, key, request_hash, method, path) "
    "VALUES (%(t)s, %(u)s, '\\x00', 'POST', '/v1/contacts')",
    "jobs": "INSERT INTO jobs (tenant_id, kind) VALUES (%(t)s, 'export_contacts')",
    # create_tenant writes the budget row already.
    "send_budgets": "INSERT INTO send_budgets (tenant_id) VALUES (%(t)s) ON CONFLICT DO NOTHING",
    "api_key_lookups": "INSERT INTO api_key_lookups (lookup_id, tenant_id) VALUES (%(u)s, %(t)s)",
    "due_tenants": "INSERT INTO due_tenants (tenant_id, queue) VALUES (%(t)s, 'outbox')",
    "engagement_firsts": "INSERT INTO engagement_firsts (tenant_id, message_id, metric, first_at) "
    "VALUES (%(t)s, 1, 'opened.human', now())",
    "event_sources": "INSERT INTO event_sources (tenant_id, source_key) VALUES (%(t)s, %(u)s)",
    "sending_pauses": "INSERT INTO sending_pauses (tenant_id, reason) VALUES (%(t)s, 'test')",
    "campaign_variants": "INSERT INTO campaign_variants (tenant_id, campaign_id, key) "
    "VALUES (%(t)s, %(k)s, 'A')",
    "segments": "INSERT INTO segments (tenant_id, name, definition) "
    "VALUES (%(t)s, 'segment', '{\"all\": [{\"field\": \"status\", \"op\": \"eq\", \"value\": \"active\"}]}')",
    "journeys": "INSERT INTO journeys (tenant_id, id, name, trigger_type, trigger_key) "
    "VALUES (%(t)s, %(j)s, 'journey', 'event', 'signup')",
    "journey_versions": "INSERT INTO journey_versions (tenant_id, journey_id, version, definition) "
    "VALUES (%(t)s, %(j)s, 1, '{\"steps\": [{\"type\": \"exit\"}]}')",
    "journey_enrollments": "INSERT INTO journey_enrollments (tenant_id, id, journey_id, contact_id, "
    "version) VALUES (%(t)s, %(e)s, %(j)s, %(c)s, 1)",
    "journey_step_runs": "INSERT INTO journey_step_runs (tenant_id, enrollment_id, step, journey_id, "
    "version, step_id) VALUES (%(t)s, %(e)s, 0, %(j)s, 1, 'step-1')",
}


def tenant_tables(owner_connection) -> list[str]:  # type: ignore[no-untyped-def]
    with owner_connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = 'tenant_id' "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
            "ORDER BY 1"
        )
        return [name for (name,) in cursor.fetchall()]


def seed(tenant_id: uuid.UUID) -> None:
    """Insert one row into every tenant table for ``tenant_id``, as the app role."""
    from swiftmail_core.db import system_tx
    from swiftmail_core.users import create_user

    values = {
        "t": str(tenant_id), "u": uuid.uuid4().hex, "c": str(uuid.uuid4()),
        "l": str(uuid.uuid4()), "k": str(uuid.uuid4()), "w": str(uuid.uuid4()),
        "j": str(uuid.uuid4()), "e": str(uuid.uuid4()),
    }
    with tenant_tx(tenant_id):
        for statement in SEED.values():
            if statement:
                app_db.execute_sql(statement, values)
    user = create_user(f"{values['u']}@people.test", "correct horse battery")
    with system_tx() as system:
        system.execute_sql(
            "INSERT INTO memberships (tenant_id, user_id, role) VALUES (%s, %s, 'viewer')",
            (str(tenant_id), str(user.id)),
        )


@pytest.fixture
def seeded(tenant_a, tenant_b):  # type: ignore[no-untyped-def]
    seed(tenant_a.id)
    seed(tenant_b.id)
    return tenant_a, tenant_b


def test_seed_covers_every_tenant_table(owner_connection) -> None:
    assert sorted(SEED) == tenant_tables(owner_connection)


def test_tenant_sees_reads_updates_deletes_nothing_of_another(seeded, owner_connection) -> None:
    tenant_a, tenant_b = seeded
    for table in tenant_tables(owner_connection):
        with tenant_tx(tenant_a.id):
            own = app_db.execute_sql(f"SELECT count(*) FROM {table}").fetchone()[0]
            assert own >= 1, table
            foreign = app_db.execute_sql(
                f"SELECT count(*) FROM {table} WHERE tenant_id = %s", (str(tenant_b.id),)
            ).fetchone()[0]
            assert foreign == 0, table
            visible = app_db.execute_sql(f"SELECT DISTINCT tenant_id FROM {table}").fetchall()
            assert visible == [(tenant_a.id,)] or visible == [(str(tenant_a.id),)], table
            updated = app_db.execute_sql(
                f"UPDATE {table} SET tenant_id = tenant_id WHERE tenant_id = %s",
                (str(tenant_b.id),),
            ).rowcount
            assert updated == 0, table
            deleted = app_db.execute_sql(
                f"DELETE FROM {table} WHERE tenant_id = %s", (str(tenant_b.id),)
            ).rowcount
            assert deleted == 0, table
    with tenant_tx(tenant_b.id):
        for table in tenant_tables(owner_connection):
            count = app_db.execute_sql(f"SELECT count(*) FROM {table}").fetchone()[0]
            assert count >= 1, table


def test_without_tenant_selects_see_nothing_and_inserts_fail(
    seeded, app_connection, owner_connection
) -> None:
    tenant_a, _ = seeded
    with app_connection.cursor() as cursor:
        for table in tenant_tables(owner_connection):
            cursor.execute(f"SELECT count(*) FROM {table}")
            assert cursor.fetchone()[0] == 0, table
        cursor.execute("SELECT count(*) FROM tenants")
        assert cursor.fetchone()[0] == 0
    app_connection.rollback()
    for statement in SEED.values():
        if not statement:
            continue
        values = {"t": str(tenant_a.id), "u": uuid.uuid4().hex, "c": str(uuid.uuid4()),
                  "l": str(uuid.uuid4()), "k": str(uuid.uuid4()), "w": str(uuid.uuid4()),
                  "j": str(uuid.uuid4()), "e": str(uuid.uuid4())}
        with app_connection.cursor() as cursor, pytest.raises(psycopg2.Error):
            cursor.execute(statement, values)
        app_connection.rollback()
        # An empty setting (what a finished transaction leaves) fails closed too.
        with app_connection.cursor() as cursor:
            cursor.execute("SELECT set_config('swiftmail.tenant_id', '', false)")
            with pytest.raises(psycopg2.Error):
                cursor.execute(statement, values)
        app_connection.rollback()


def test_writing_another_tenants_id_is_refused(seeded) -> None:
    tenant_a, tenant_b = seeded
    with pytest.raises(peewee.ProgrammingError, match="row-level security"), tenant_tx(tenant_a.id):
        app_db.execute_sql(
            "INSERT INTO lists (tenant_id, name) VALUES (%s, 'sneaky')", (str(tenant_b.id),)
        )
    # Moving a row to another tenant: the policy's WITH CHECK refuses it (on Citus,
    # tests/citus/test_isolation_suite.py, changing the distribution column is refused first).
    with pytest.raises((peewee.ProgrammingError, peewee.NotSupportedError),
                       match=r"row-level security|modifying the partition value"), \
            tenant_tx(tenant_a.id):
        app_db.execute_sql("UPDATE lists SET tenant_id = %s", (str(tenant_b.id),))
    with tenant_tx(tenant_a.id):
        renamed = app_db.execute_sql("UPDATE tenants SET name = 'renamed'").rowcount
        assert renamed == 1  # its own row only; B's row is invisible
    with pytest.raises(peewee.ProgrammingError, match="permission denied"), tenant_tx(tenant_a.id):
        app_db.execute_sql("UPDATE tenants SET id = %s", (str(tenant_b.id),))


def test_interleaved_transactions_on_one_connection(seeded, targets, runtime) -> None:
    tenant_a, tenant_b = seeded
    db.disconnect()
    db.connect(targets, pool_size=1)
    try:
        backends = set()
        for i in range(2000):
            tenant = tenant_a if i % 2 == 0 else tenant_b
            with tenant_tx(tenant.id):
                rows = app_db.execute_sql("SELECT DISTINCT tenant_id::text FROM contacts").fetchall()
                assert rows == [(str(tenant.id),)]
                backends.add(app_db.execute_sql("SELECT pg_backend_pid()").fetchone()[0])
            with app_db.connection_context():
                left = app_db.execute_sql(
                    "SELECT coalesce(current_setting('swiftmail.tenant_id', true), '')"
                ).fetchone()[0]
                assert left == ""
        assert len(backends) == 1
    finally:
        db.disconnect()
        db.connect(targets, pool_size=runtime.settings.db_pool_size)


def test_tenant_tx_refuses_nesting_and_bad_ids(tenant_a, tenant_b) -> None:
    with pytest.raises(TenantIsolationError), tenant_tx(tenant_a.id), tenant_tx(tenant_b.id):
        pass
    with pytest.raises(TenantIsolationError), tenant_tx("not-a-uuid"):
        pass


def test_tenant_tx_of_the_same_tenant_joins_the_open_one(tenant_a) -> None:
    # A service called inside the API's request transaction joins it as a savepoint:
    # its work commits or rolls back with the request.
    with pytest.raises(RuntimeError), tenant_tx(tenant_a.id) as outer:
        with tenant_tx(tenant_a.id) as inner:
            assert inner is outer
            inner.execute_sql("INSERT INTO lists (tenant_id, name) VALUES (%s, 'joined')",
                              (str(tenant_a.id),))
        raise RuntimeError("the request failed")
    with tenant_tx(tenant_a.id) as database:
        assert database.execute_sql(
            "SELECT count(*) FROM lists WHERE name = 'joined'").fetchone()[0] == 0


def test_app_role_cannot_truncate_or_read_users(seeded, app_connection) -> None:
    with app_connection.cursor() as cursor, pytest.raises(errors.InsufficientPrivilege):
        cursor.execute("TRUNCATE contacts")
    app_connection.rollback()
    with app_connection.cursor() as cursor, pytest.raises(errors.InsufficientPrivilege):
        cursor.execute("SELECT * FROM users")
    app_connection.rollback()
    with app_connection.cursor() as cursor, pytest.raises(errors.InsufficientPrivilege):
        cursor.execute("SELECT * FROM events_default")  # partitions only through the parent
    app_connection.rollback()


def test_posture_audit_passes(targets) -> None:
    assert failures(audit(targets)) == []


def test_posture_audit_catches_a_rogue_table(targets, owner_connection) -> None:
    with owner_connection.cursor() as cursor:
        cursor.execute(
            "CREATE TABLE rogue (tenant_id uuid NOT NULL, code text, UNIQUE (code))"
        )
        cursor.execute("ALTER TABLE rogue ENABLE ROW LEVEL SECURITY")
        cursor.execute(f"GRANT TRUNCATE ON rogue TO {targets.role_names['app']}")
        cursor.execute("CREATE VIEW rogue_view AS SELECT * FROM rogue")
    try:
        failed = {finding.check for finding in failures(audit(targets))}
        assert "rogue has ENABLE and FORCE row level security" in failed
        assert f"rogue has the tenant policy (USING and WITH CHECK) for {targets.role_names['app']}" in failed
        assert any(check.startswith("unique rogue_code_key on rogue") for check in failed)
        assert f"role {targets.role_names['app']} cannot TRUNCATE" in failed
        assert "view rogue_view is security_invoker" in failed
    finally:
        with owner_connection.cursor() as cursor:
            cursor.execute("DROP VIEW rogue_view")
            cursor.execute("DROP TABLE rogue")
    assert failures(audit(targets)) == []
