"""The schema version check: serving processes refuse a schema their code does not fit."""

from __future__ import annotations

import contextlib
import re
from collections.abc import Iterator

import psycopg2
import pytest

from swiftmail_core.db.audit import Finding
from swiftmail_core.db.migrate import available_migrations
from swiftmail_core.db.schema_version import (
    SchemaState,
    SchemaVersionError,
    check_schema,
    code_schema_version,
    problem,
    read_state,
)
from swiftmail_core.doctor import _owner_elsewhere
from swiftmail_core.settings import load_settings
from tests.cli_helpers import run_swiftmail

OURS = code_schema_version()
SHIPPED = frozenset(m.version for m in available_migrations())

# Every serving command, with what it needs to get as far as its start-up check.
SERVING_COMMANDS = [
    ("serve", "--bind", "127.0.0.1:24001"),
    ("worker",),
    ("tracking", "drain"),
    ("webhooks", "deliver"),
    ("relay", "run"),
]


def test_code_fits_a_schema_with_every_migration_applied() -> None:
    assert problem(SchemaState(SHIPPED, 0)) is None


def test_code_refuses_a_schema_missing_one_of_its_migrations() -> None:
    reason = problem(SchemaState(SHIPPED - {OURS}, 0))
    assert reason is not None
    assert "older than this code" in reason and "run `swiftmail migrate` first" in reason
    assert f"{OURS:04d}_" in reason


def test_code_refuses_a_database_from_before_the_check() -> None:
    reason = problem(None)
    assert reason is not None and "run `swiftmail migrate` first" in reason


def test_the_compatibility_line_is_not_part_of_the_checksum() -> None:
    # It may be added to a migration already applied (0187 got it after landing).
    from swiftmail_core.db.migrate import Migration

    body = "ALTER TABLE t DROP CONSTRAINT k;\n"
    plain = Migration(190, "x", body)
    declared = Migration(190, "x", "-- oldest-compatible-code: 0190 (why)\n" + body)
    assert declared.checksum == plain.checksum
    assert declared.oldest_compatible_code == 190 and plain.oldest_compatible_code is None
    assert Migration(190, "x", body + "-- more\n").checksum != plain.checksum


def test_code_runs_on_a_newer_schema_that_serves_it() -> None:
    # Migrations first, then hosts one by one: additive migrations keep old code running.
    assert problem(SchemaState(SHIPPED | {OURS + 1, OURS + 2}, OURS)) is None
    assert problem(SchemaState(SHIPPED | {OURS + 1}, 0)) is None


def test_code_refuses_a_newer_schema_that_no_longer_serves_it() -> None:
    reason = problem(SchemaState(SHIPPED | {OURS + 1}, OURS + 1))
    assert reason is not None
    assert f"needs code of schema {OURS + 1:04d} or newer" in reason
    assert "upgrade this host" in reason and "\n" not in reason


def test_migrations_record_the_oldest_code_they_serve() -> None:
    # Anything after the check that drops or rewrites what older code may read must
    # say which code still copes with it (docs/operations.md, "Writing a migration").
    # DROP CONSTRAINT/INDEX: older code's ON CONFLICT may name the unique key (0187 did).
    breaking = re.compile(r"^(?!\s*--).*\b(DROP\s+(TABLE|COLUMN|FUNCTION|VIEW|CONSTRAINT|INDEX)"
                          r"|RENAME|ALTER\s+COLUMN\s+\w+\s+(TYPE|SET\s+NOT\s+NULL))\b",
                          re.IGNORECASE | re.MULTILINE)
    for migration in available_migrations():
        if migration.version <= 176:
            continue
        if breaking.search(migration.text):
            assert migration.oldest_compatible_code is not None, migration.name
        if migration.oldest_compatible_code is not None:
            assert migration.oldest_compatible_code <= migration.version, migration.name


def test_the_system_role_reads_the_test_database_schema(targets) -> None:
    state = read_state(targets, role="system")
    assert state is not None
    assert state.applied == SHIPPED
    assert state.oldest_compatible_code == max(
        m.oldest_compatible_code or 0 for m in available_migrations())
    assert read_state(targets, role="app") == state
    check_schema(targets)


@contextlib.contextmanager
def _owner(targets) -> Iterator[psycopg2.extensions.cursor]:
    connection = psycopg2.connect(targets.dsn("owner"))
    connection.autocommit = True
    try:
        with connection.cursor() as cursor:
            yield cursor
    finally:
        connection.close()


@contextlib.contextmanager
def _newer_schema(targets, oldest_compatible_code: int) -> Iterator[None]:
    """Pretend a newer release migrated this database (removed afterwards)."""
    with _owner(targets) as cursor:
        cursor.execute("INSERT INTO schema_migrations (version, name, checksum, "
                       "oldest_compatible_code) VALUES (9999, 'from_the_future', 'x', %s)",
                       (oldest_compatible_code,))
    try:
        yield
    finally:
        with _owner(targets) as cursor:
            cursor.execute("DELETE FROM schema_migrations WHERE version = 9999")


def test_a_newer_schema_that_serves_this_code_is_accepted(targets) -> None:
    with _newer_schema(targets, OURS):
        check_schema(targets)


@pytest.mark.parametrize("command", SERVING_COMMANDS, ids=lambda c: " ".join(c))
def test_serving_commands_refuse_a_schema_that_no_longer_serves_them(
    test_environ, targets, command
) -> None:
    with _newer_schema(targets, 9999):
        result = run_swiftmail(*command, env=test_environ, timeout=60)
    assert result.returncode == 1, result.stdout + result.stderr
    lines = result.stderr.strip().splitlines()
    assert lines[-1].startswith("error: the database schema (9999) needs code of schema 9999")
    assert "Traceback" not in result.stderr


def test_doctor_reports_the_mismatch_and_migrate_still_runs(test_environ, targets) -> None:
    fine = run_swiftmail("doctor", "--no-outside-dns", env=test_environ)
    assert f"ok   schema version fits this code (code {OURS:04d}, database {OURS:04d}" \
        in fine.stdout, fine.stdout
    with _newer_schema(targets, 9999):
        doctor = run_swiftmail("doctor", "--no-outside-dns", env=test_environ)
        migrate = run_swiftmail("migrate", env=test_environ)
    assert doctor.returncode == 1
    assert "FAIL schema version fits this code (the database schema (9999) needs code" \
        in doctor.stdout
    assert migrate.returncode == 0, migrate.stderr
    assert "none (up to date)" in migrate.stdout


def test_an_old_schema_is_refused_until_migrate_runs(test_environ, targets) -> None:
    # The database as the release before the check left it: no function, no row.
    with _owner(targets) as cursor:
        cursor.execute("DROP FUNCTION swiftmail_schema_state()")
        cursor.execute("DELETE FROM schema_migrations WHERE version = 176")
    try:
        with pytest.raises(SchemaVersionError, match="run `swiftmail migrate` first"):
            check_schema(targets)
        worker = run_swiftmail("worker", env=test_environ, timeout=60)
        assert worker.returncode == 1
        assert worker.stderr.strip().splitlines()[-1].startswith(
            "error: the database schema is older than this code")
    finally:
        migrate = run_swiftmail("migrate", env=test_environ)
    assert migrate.returncode == 0, migrate.stderr
    assert "0176_schema_state" in migrate.stdout
    check_schema(targets)


def test_doctor_warns_instead_of_failing_where_the_owner_password_is_not_given(
        tmp_path) -> None:  # type: ignore[no-untyped-def]
    failed = Finding(False, "connect as owner role", "password authentication failed")
    # Its own data dir: the default one may hold a config with the owner's password
    # (`make demo` writes one in the user's home).
    base = {"DATABASE_URL": "postgresql://db/swiftmail", "SWIFTMAIL_DATA_DIR": str(tmp_path)}
    without = load_settings(environ=base)
    with_password = load_settings(environ={**base, "SWIFTMAIL_DB_OWNER_PASSWORD": "p"})
    assert _owner_elsewhere(without, failed).warning
    assert "run on the migration host" in _owner_elsewhere(without, failed).detail
    assert _owner_elsewhere(with_password, failed) == failed
    app = Finding(False, "connect as app role", "refused")
    assert _owner_elsewhere(without, app) == app
