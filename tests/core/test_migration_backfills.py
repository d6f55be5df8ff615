"""Upgrading an install with data: a migration's backfill copies every tenant's rows.

The owner runs migrations and is itself subject to FORCE RLS on every tenant
table (no policy of its own), so a backfill that does not lift FORCE reads
and writes no rows. A fresh install cannot show it (its tables are empty):
here a scratch database is installed at an old schema by the real runner,
given rows the way that schema stored them (as the superuser: setup only),
then migrated to the newest schema by the real runner. A static check keeps
later migrations from repeating the mistake.
"""

from __future__ import annotations

import dataclasses
import re
import uuid
from collections.abc import Iterator

import psycopg2
import pytest
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from swiftmail_core import db
from swiftmail_core.db import migrate as migrate_module
from swiftmail_core.db.bootstrap import bootstrap
from swiftmail_core.db.statements import split_statements
from swiftmail_core.db.targets import DatabaseTargets

#: The schema before api_key_lookups (0175).
INSTALLED_AT = 174

#: Backfills that ran under FORCE RLS and so copied nothing on an install with data:
#: 0160's outbox hints (rebuilt from the ledger by the next claim round or scheduler
#: tick: harmless) and 0175's API key lookups (copied again by 0198).
BLIND_BACKFILLS = {160: {"messages", "outbox_tenants"}, 175: {"api_keys", "api_key_lookups"}}
_ROUTINE = re.compile(r"^CREATE\s+(OR\s+REPLACE\s+)?(FUNCTION|PROCEDURE)\b", re.IGNORECASE)
_COMMENT = re.compile(r"--[^\n]*")
_CREATED = re.compile(r"\bCREATE\s+TABLE\s+(\w+)", re.IGNORECASE)
_FORCE = re.compile(r"\bALTER\s+TABLE\s+(\w+)\s+(NO\s+)?FORCE\s+ROW\s+LEVEL", re.IGNORECASE)
_ROWS = re.compile(r"\b(?:FROM|INTO|UPDATE|JOIN)\s+(\w+)", re.IGNORECASE)


def _in_database(targets: DatabaseTargets, database: str) -> DatabaseTargets:
    def moved(dsn: str) -> str:
        return make_dsn(**{**parse_dsn(dsn), "dbname": database})

    return dataclasses.replace(targets, database=database, analytics_dsn=None,
                               role_dsns={role: moved(dsn)
                                          for role, dsn in targets.role_dsns.items()})


@pytest.fixture
def old_install(targets, settings, monkeypatch) -> Iterator[DatabaseTargets]:  # type: ignore[no-untyped-def]
    """The targets of a scratch install migrated up to INSTALLED_AT (dropped afterwards)."""
    scratch = _in_database(targets, f"{targets.database}_upgrade")
    shipped = migrate_module.available_migrations()
    monkeypatch.setattr(migrate_module, "available_migrations",
                        lambda: [m for m in shipped if m.version <= INSTALLED_AT])
    try:
        bootstrap(scratch, {"owner": settings.db_owner_password,
                            "app": settings.db_app_password,
                            "system": settings.db_system_password})
        migrate_module.migrate(scratch)
        monkeypatch.undo()
        yield scratch
    finally:
        monkeypatch.undo()
        admin = psycopg2.connect(targets.admin_dsn)
        admin.autocommit = True
        try:
            with admin.cursor() as cursor:
                cursor.execute(sql.SQL("DROP DATABASE IF EXISTS {} WITH (FORCE)").format(
                    sql.Identifier(scratch.database)))
        finally:
            admin.close()


def _as_superuser(targets: DatabaseTargets):  # type: ignore[no-untyped-def]
    connection = psycopg2.connect(make_dsn(**{**parse_dsn(targets.admin_dsn),
                                               "dbname": targets.database}))
    connection.autocommit = True
    return connection


def _add_api_key(targets: DatabaseTargets) -> tuple[str, str]:
    """Store a tenant and a key the way schema 0174 did; return (tenant id, key)."""
    from swiftmail_core.apikeys import hash_key

    tenant, lookup_id = str(uuid.uuid4()), "a" * 12
    key = f"sm_live_{lookup_id}_{'b' * 40}"
    connection = _as_superuser(targets)
    try:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO tenants (id, slug, name) VALUES (%s, 'old', 'Old')",
                           (tenant,))
            cursor.execute("INSERT INTO api_keys (tenant_id, lookup_id, secret_hash, role) "
                           "VALUES (%s, %s, %s, 'admin')", (tenant, lookup_id, hash_key(key)))
    finally:
        connection.close()
    return tenant, key


def test_an_api_key_from_before_0175_authenticates_after_the_upgrade(
        old_install, targets, settings) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_core.apikeys import authenticate_key

    tenant, key = _add_api_key(old_install)
    applied = migrate_module.migrate(old_install)
    assert "0175_api_key_lookups" in applied
    newest = migrate_module.available_migrations()[-1]
    assert applied[-1] == f"{newest.version:04d}_{newest.name}"

    db.disconnect()
    db.connect(old_install, pool_size=2)
    try:
        principal = authenticate_key(key)
    finally:
        db.disconnect()
        db.connect(targets, pool_size=settings.db_pool_size,
                   failover_wait_seconds=settings.db_failover_wait_seconds)
    assert (str(principal.tenant_id), principal.role) == (tenant, "admin")

    connection = _as_superuser(old_install)
    try:
        with connection.cursor() as cursor:
            # The backfill put FORCE back on every table it lifted it from.
            cursor.execute("SELECT relname FROM pg_class c JOIN pg_namespace n "
                           "ON n.oid = c.relnamespace WHERE n.nspname = 'public' "
                           "AND c.relrowsecurity AND NOT c.relforcerowsecurity")
            assert cursor.fetchall() == []
    finally:
        connection.close()


def _blind_row_statements(text: str, forced: set[str]) -> set[str]:
    """Return the FORCE-RLS tables ``text`` reads or writes rows of without lifting FORCE.

    Function bodies are left out (they run as their caller); a DO block is
    followed clause by clause. A table the migration creates is not forced
    until its own ``FORCE ROW LEVEL SECURITY``.
    """
    blind: set[str] = set()
    created: set[str] = set()
    lifted: set[str] = set()
    for statement in split_statements(text):
        if _ROUTINE.match(statement):
            continue
        for clause in _COMMENT.sub("", statement).split(";"):
            if match := _FORCE.search(clause):
                table = match[1].lower()
                (lifted.add if match[2] else lifted.discard)(table)
                created.discard(table)
                continue
            if match := _CREATED.search(clause):
                created.add(match[1].lower())
                continue
            for table in map(str.lower, _ROWS.findall(clause)):
                if table in forced and table not in created and table not in lifted:
                    blind.add(table)
    return blind


def test_migrations_lift_force_before_touching_rows(owner_connection, targets) -> None:  # type: ignore[no-untyped-def]
    """Rule (docs/operations.md): a migration's data statement lifts FORCE RLS first.

    The owner has a policy of its own only on tenants (0170); on every other
    FORCE-RLS table it reads and writes no rows.
    """
    with owner_connection.cursor() as cursor:
        cursor.execute(
            "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relforcerowsecurity AND NOT EXISTS ("
            " SELECT 1 FROM pg_policies p WHERE p.schemaname = 'public' "
            " AND p.tablename = c.relname AND %s = ANY (p.roles))",
            (targets.role_names["owner"],))
        forced = {name for (name,) in cursor.fetchall()} | {"outbox_tenants"}  # 0188 renamed it
    assert {"api_keys", "api_key_lookups", "messages", "send_budgets"} <= forced
    found: dict[int, set[str]] = {}
    for migration in migrate_module.available_migrations():
        if migration.version <= 2:  # 0001/0002 create the tables and turn RLS on
            continue
        for text in (migration.text, migration.citus_text or ""):
            if blind := _blind_row_statements(text, forced):
                found.setdefault(migration.version, set()).update(blind)
    assert found == BLIND_BACKFILLS
