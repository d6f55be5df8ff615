"""`swiftmail migrate` upgrading a Citus cluster installed long ago, with rows.

The cluster is installed at schema 0155 (the oldest one `swiftmail migrate`
can finish on: it keeps event partitions with 0155's function) in a database
of its own on the suite's cluster, its tables distributed as `swiftmail init
--citus` would, then migrated by the real command to the newest schema.
"""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import psycopg2
import pytest

from tests.cli_helpers import run_swiftmail
from tests.schema_snapshot import schema_snapshot

INSTALLED_AT = 155
DATABASE = "swiftmail_upgrade"


def _connect(cluster, database: str, port: int | None = None):  # type: ignore[no-untyped-def]
    connection = psycopg2.connect(cluster.admin_url(port or cluster.coordinator_port, database))
    connection.autocommit = True
    return connection


@pytest.fixture
def old_cluster(citus_cluster, citus_environ, tmp_path, monkeypatch) -> Iterator[dict[str, str]]:  # type: ignore[no-untyped-def]
    """The environment of an install whose distributed schema stopped at 0155."""
    from swiftmail_core.db import citus
    from swiftmail_core.db import migrate as migrate_module
    from swiftmail_core.db.bootstrap import bootstrap
    from swiftmail_core.db.targets import database_targets
    from swiftmail_core.settings import load_settings

    environ = {**citus_environ, "SWIFTMAIL_DATA_DIR": str(tmp_path),
               "SWIFTMAIL_CONFIG": str(tmp_path / "swiftmail.toml"),
               "DATABASE_URL": f"postgresql://127.0.0.1:{citus_cluster.coordinator_port}/"
                               f"{DATABASE}",
               "SWIFTMAIL_CITUS": "true"}
    settings = load_settings(environ=environ)
    targets = database_targets(settings)
    passwords = {"owner": settings.db_owner_password, "app": settings.db_app_password,
                 "system": settings.db_system_password}
    shipped = migrate_module.available_migrations()
    monkeypatch.setattr(migrate_module, "available_migrations",
                        lambda: [m for m in shipped if m.version <= INSTALLED_AT])
    # What setup_cluster distributed then: api_key_lookups (0175) and the claim
    # function (0190) came later.
    monkeypatch.setattr(citus, "REFERENCE_TABLES", ("tenants", "users", "scheduler_ticks"))
    monkeypatch.setattr(citus, "TENANT_FUNCTIONS", ())
    try:
        # What `swiftmail init --citus` did when 0155 was the newest migration.
        bootstrap(targets, passwords)
        assert migrate_module.migrate(targets)[-1] == "0155_event_partitions"
        citus.setup_cluster(targets, settings.citus_workers, passwords)
        monkeypatch.undo()
        yield environ
    finally:
        monkeypatch.undo()
        for port in citus_cluster.ports:
            connection = _connect(citus_cluster, "postgres", port)
            try:  # not `with connection`: that opens a transaction, which DROP DATABASE refuses
                with connection.cursor() as cursor:
                    cursor.execute(f"DROP DATABASE IF EXISTS {DATABASE} WITH (FORCE)")
            finally:
                connection.close()


def _add_rows(cursor) -> dict[str, str]:  # type: ignore[no-untyped-def]
    """Give the old install a tenant, an API key, a contact, a campaign and its message."""
    from swiftmail_core.apikeys import hash_key

    tenant, contact, campaign = (str(uuid.uuid4()) for _ in range(3))
    key = f"sm_live_{'u' * 12}_{'k' * 40}"
    cursor.execute("INSERT INTO tenants (id, slug, name) VALUES (%s, 'upgraded', 'Upgraded')",
                   (tenant,))
    # As 0155 stored a key: api_keys only (api_key_lookups came with 0175).
    cursor.execute("INSERT INTO api_keys (tenant_id, lookup_id, secret_hash, role) "
                   "VALUES (%s, %s, %s, 'admin')", (tenant, "u" * 12, hash_key(key)))
    cursor.execute("INSERT INTO contacts (tenant_id, id, email) VALUES (%s, %s, 'c@u.example')",
                   (tenant, contact))
    cursor.execute("INSERT INTO campaigns (tenant_id, id, name, status) "
                   "VALUES (%s, %s, 'Spring', 'sending')", (tenant, campaign))
    cursor.execute("INSERT INTO messages (tenant_id, campaign_id, contact_id, email) "
                   "VALUES (%s, %s, %s, 'c@u.example')", (tenant, campaign, contact))
    return {"tenant": tenant, "contact": contact, "campaign": campaign, "key": key}


def _authenticate(environ: dict[str, str], runtime, key: str):  # type: ignore[no-untyped-def]
    """Authenticate ``key`` against the install ``environ`` names, then reconnect ``runtime``."""
    from swiftmail_core import db
    from swiftmail_core.apikeys import authenticate_key
    from swiftmail_core.db.targets import database_targets
    from swiftmail_core.settings import load_settings

    db.disconnect()
    db.connect(database_targets(load_settings(environ=environ)), pool_size=2)
    try:
        return authenticate_key(key)
    finally:
        db.disconnect()
        db.connect(runtime.targets, pool_size=runtime.settings.db_pool_size,
                   failover_wait_seconds=runtime.settings.db_failover_wait_seconds)


def _schema(cluster, database: str) -> dict[str, list[tuple]]:  # type: ignore[type-arg,no-untyped-def]
    with _connect(cluster, database) as connection, connection.cursor() as cursor:
        return schema_snapshot(cursor)


def test_migrate_brings_a_cluster_installed_at_0155_to_the_newest_schema(
        old_cluster, citus_runtime, citus_cluster) -> None:  # type: ignore[no-untyped-def]
    """Every migration after 0155 runs on the distributed tables, rows kept.

    0156, 0161, 0173, 0180 and 0188 add columns with an inline CHECK, which
    Citus refuses on a distributed table ("cannot execute ADD COLUMN command
    with PRIMARY KEY, UNIQUE, FOREIGN and CHECK constraints"). The upgraded
    schema must equal a fresh install's (the suite's `init --citus`
    database), constraint names included: later migrations name them. A key
    created at 0155 still authenticates: 0198 copies it into 0175's
    api_key_lookups (a reference table) from the distributed api_keys.
    """
    from swiftmail_core.db.migrate import available_migrations

    with _connect(citus_cluster, DATABASE) as connection, connection.cursor() as cursor:
        rows = _add_rows(cursor)
        cursor.execute("SELECT count(*) FROM pg_dist_partition "
                       "WHERE logicalrelid = 'campaigns'::regclass")
        assert cursor.fetchone() == (1,)  # installed: campaigns is distributed
    migrated = run_swiftmail("migrate", env=old_cluster, timeout=300)
    assert migrated.returncode == 0, migrated.stdout + migrated.stderr
    newest = available_migrations()[-1]
    assert f"{newest.version:04d}_{newest.name}" in migrated.stdout, migrated.stdout
    assert _schema(citus_cluster, DATABASE) == _schema(citus_cluster, "swiftmail")
    with _connect(citus_cluster, DATABASE) as connection, connection.cursor() as cursor:
        cursor.execute("SELECT max(version) FROM schema_migrations")
        assert cursor.fetchone() == (newest.version,)
        cursor.execute("SELECT name, segment_ids, sunset_days, timezone_fallbacks FROM campaigns "
                       "WHERE tenant_id = %s AND id = %s", (rows["tenant"], rows["campaign"]))
        assert cursor.fetchone() == ("Spring", [], None, 0)
        cursor.execute("SELECT contact_id::text, status, variant FROM messages "
                       "WHERE tenant_id = %s", (rows["tenant"],))
        assert cursor.fetchall() == [(rows["contact"], "queued", None)]
        for bad in ("sunset_days = 0", "ab_test_percent = 101, ab_metric = 'opens'",
                    "local_send_time = '25:00'"):
            cursor.execute("SAVEPOINT bad")
            with pytest.raises(psycopg2.errors.CheckViolation):
                cursor.execute(f"UPDATE campaigns SET {bad} WHERE tenant_id = %s",
                               (rows["tenant"],))
            cursor.execute("ROLLBACK TO SAVEPOINT bad")
        cursor.execute(
            "SELECT DISTINCT result FROM run_command_on_shards('campaigns', "
            "'SELECT count(*) FROM pg_constraint WHERE conrelid = ''%s''::regclass "
            "AND conname ~ ''^campaigns_(sunset_days|ab_metric|local_send_time)_check''')")
        assert cursor.fetchall() == [("3",)]  # the checks are on every shard too
    principal = _authenticate(old_cluster, citus_runtime, rows["key"])
    assert (str(principal.tenant_id), principal.role) == (rows["tenant"], "admin")
    doctor = run_swiftmail("doctor", env=old_cluster, timeout=120)
    for line in ("ok   campaign_variants is distributed by tenant_id",  # added by 0161
                 "ok   journeys is distributed by tenant_id",  # 0171, referenced by 0181
                 "ok   due_tenants is distributed by tenant_id",  # 0160, altered by 0188
                 "ok   api_key_lookups is a reference table",  # 0175
                 "ok   tenant tables are colocated",
                 "ok   swiftmail_claim_tenant runs on the tenant's worker"):  # 0190
        assert line in doctor.stdout, doctor.stdout
    again = run_swiftmail("migrate", env=old_cluster, timeout=120)
    assert again.returncode == 0, again.stdout + again.stderr
    assert "migrations applied: none (up to date)" in again.stdout
