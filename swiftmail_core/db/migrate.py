"""Numbered SQL migrations, applied once each, as the owner role.

Each ``migrations/NNNN_name.sql`` runs in its own transaction together with
its row in ``schema_migrations``; an advisory lock serialises concurrent
runs, so ``swiftmail migrate`` twice (or on two hosts at once) changes nothing
the second time. The file's statements are sent one at a time (``statements``
splits it as psql does): Citus sends a distributed table's DDL to the workers
as the query string it was given, and refuses one holding several statements
("cannot insert multiple commands into a prepared statement").

A migration that breaks code older than some schema version says so in a
line ``-- oldest-compatible-code: NNNN``; it is recorded with the migration
and read by the start-up schema check (``schema_version.py``).

A migration may have a Citus variant, ``NNNN_name.citus.sql`` next to it:
the same change written the way Citus takes it on distributed tables (it
refuses ``ADD COLUMN`` with an unnamed inline constraint, for one). ``apply``
runs the variant instead of the file when the database has distributed
tables, i.e. on a Citus cluster installed before the migration shipped
(``swiftmail init --citus`` applies every migration before distributing).
The file's checksum is recorded either way, so the variant must leave the
schema exactly as the file does, constraint names included
(``tests/core/test_migration_variants.py`` compares them).

On such a cluster ``migrate`` also distributes, before each migration, the
tables the previous one added (``citus.distribute_tables``): a migration
meets the cluster as an install at the version before it would be, e.g.
0181 adds a foreign key from the distributed ``links`` to 0171's ``journeys``.
"""

from __future__ import annotations

import dataclasses
import hashlib
import re
from collections.abc import Callable
from importlib import resources

import psycopg2
from psycopg2 import sql

from swiftmail_core.db.citus import distribute_tables
from swiftmail_core.db.statements import split_statements
from swiftmail_core.db.targets import DatabaseTargets
from swiftmail_core.errors import ConfigurationError, MigrationError, ServiceUnavailableError

MIGRATION_LOCK = 0x5357_4D49  # "SWMI"
_NAME = re.compile(r"^(\d{4})_([a-z0-9_]+)\.sql$")
_CITUS_VARIANT = re.compile(r"^(\d{4})_([a-z0-9_]+)\.citus\.sql$")
# "-- oldest-compatible-code: NNNN (why)": metadata, left out of the checksum, so it
# can be added to a migration already applied without "changed after it was applied".
_OLDEST_COMPATIBLE = re.compile(r"^-- oldest-compatible-code: (\d{4})\b.*\n?", re.MULTILINE)


@dataclasses.dataclass(frozen=True)
class Migration:
    """One numbered migration file."""

    version: int
    name: str
    text: str
    #: ``NNNN_name.citus.sql``: the same change as Citus takes it on distributed tables.
    citus_text: str | None = None

    @property
    def checksum(self) -> str:
        """Return a hash of the file, recorded to detect edited migrations."""
        return hashlib.sha256(_OLDEST_COMPATIBLE.sub("", self.text).encode()).hexdigest()

    @property
    def oldest_compatible_code(self) -> int | None:
        """Return the oldest code schema version this migration leaves working, if it says."""
        match = _OLDEST_COMPATIBLE.search(self.text)
        return int(match[1]) if match else None


def available_migrations() -> list[Migration]:
    """Return every shipped migration in version order, with its Citus variant if any.

    Raises ValueError on a Citus variant whose migration is not shipped.
    """
    found: dict[str, Migration] = {}
    variants: dict[str, str] = {}
    for entry in resources.files("swiftmail_core.migrations").iterdir():
        if match := _NAME.match(entry.name):
            found[entry.name] = Migration(int(match[1]), match[2], entry.read_text())
        elif _CITUS_VARIANT.match(entry.name):
            variants[entry.name.replace(".citus.sql", ".sql")] = entry.read_text()
    for file_name, text in variants.items():
        if file_name not in found:
            raise ValueError(f"Citus variant of {file_name}, which is not a migration")
        found[file_name] = dataclasses.replace(found[file_name], citus_text=text)
    return sorted(found.values(), key=lambda migration: migration.version)


def render(text: str, role_names: dict[str, str]) -> str:
    """Replace @owner_role@, @app_role@, @system_role@ with quoted names."""
    for role, name in role_names.items():
        quoted = '"' + name.replace('"', '""') + '"'
        text = text.replace(f"@{role}_role@", quoted)
    return text


def has_distributed_tables(cursor: psycopg2.extensions.cursor) -> bool:
    """Return True when the database is a Citus coordinator with distributed tables."""
    cursor.execute("SELECT to_regclass('pg_catalog.pg_dist_partition') IS NOT NULL")
    if not cursor.fetchone()[0]:
        return False
    cursor.execute("SELECT EXISTS (SELECT 1 FROM pg_catalog.pg_dist_partition)")
    return bool(cursor.fetchone()[0])


def apply(cursor: psycopg2.extensions.cursor, migration: Migration,
          role_names: dict[str, str]) -> None:
    """Run ``migration``'s statements one by one in the cursor's transaction.

    On distributed tables its Citus variant runs instead, when it has one.
    """
    text = migration.text
    if migration.citus_text is not None and has_distributed_tables(cursor):
        text = migration.citus_text
    for statement in split_statements(render(text, role_names)):
        cursor.execute(statement)


def connect_owner(targets: DatabaseTargets) -> psycopg2.extensions.connection:
    """Open a plain psycopg2 connection as the owner role."""
    try:
        return psycopg2.connect(targets.dsn("owner"))
    except psycopg2.OperationalError as ex:
        raise ServiceUnavailableError(
            f"cannot connect as the owner role ({str(ex).strip()}): "
            "run `swiftmail init` first, or check database_url"
        ) from ex


def migrate(targets: DatabaseTargets,
            report: Callable[[str], None] | None = None) -> list[str]:
    """Apply pending migrations; return the names of those applied.

    On an installed Citus cluster (tables already distributed) the tables the
    previous migration added are distributed before each migration runs, as
    an install at that version would have them; ``report`` is called with each
    such action.
    """
    applied: list[str] = []
    connection = connect_owner(targets)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("SELECT pg_advisory_lock(%s)", (MIGRATION_LOCK,))
            cursor.execute(
                "CREATE TABLE IF NOT EXISTS schema_migrations ("
                " version integer PRIMARY KEY, name text NOT NULL, checksum text NOT NULL,"
                " applied_at timestamptz NOT NULL DEFAULT now())"
            )
            cursor.execute("ALTER TABLE schema_migrations "
                           "ADD COLUMN IF NOT EXISTS oldest_compatible_code integer")
            cursor.execute("SELECT version, checksum FROM schema_migrations")
            done = dict(cursor.fetchall())
            distributed = has_distributed_tables(cursor)
        for migration in available_migrations():
            if migration.version in done:
                if done[migration.version] != migration.checksum:
                    raise ConfigurationError(
                        f"migration {migration.version:04d}_{migration.name} changed after it "
                        "was applied: add a new migration instead of editing it"
                    )
                continue
            if distributed:
                for action in _distribute_local_tables(connection):
                    if report is not None:
                        report(action)
            name = f"{migration.version:04d}_{migration.name}"
            try:
                with connection, connection.cursor() as cursor:
                    apply(cursor, migration, targets.role_names)
                    cursor.execute(
                        "INSERT INTO schema_migrations (version, name, checksum, "
                        "oldest_compatible_code) VALUES (%s, %s, %s, %s)",
                        (migration.version, migration.name, migration.checksum,
                         migration.oldest_compatible_code),
                    )
            except psycopg2.Error as ex:
                # NOTE: first line only: the next ones quote the SQL.
                reason = next(iter(str(ex).strip().splitlines()), type(ex).__name__)
                done_now = (f"; {len(applied)} applied before it, up to {applied[-1]}"
                            if applied else "")
                raise MigrationError(f"migration {name} failed, nothing of it was applied "
                                     f"({reason}){done_now}") from ex
            applied.append(name)
        with connection, connection.cursor() as cursor:
            # Keep event partitions months ahead on every migrate.
            cursor.execute("SELECT swiftmail_ensure_event_partitions(3)")
            cursor.execute("SELECT pg_advisory_unlock(%s)", (MIGRATION_LOCK,))
    finally:
        connection.close()
    return applied


def _distribute_local_tables(connection: psycopg2.extensions.connection) -> list[str]:
    """Distribute the tables still local on a Citus coordinator; return what was done."""
    connection.autocommit = True  # distribute_tables runs its own transactions
    try:
        return distribute_tables(connection)
    finally:
        connection.autocommit = False


def pending_migrations(targets: DatabaseTargets) -> list[str]:
    """Return the names of migrations not yet applied."""
    connection = connect_owner(targets)
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute("SELECT to_regclass('schema_migrations') IS NOT NULL")
            row = cursor.fetchone()
            done: set[int] = set()
            if row and row[0]:
                cursor.execute(sql.SQL("SELECT version FROM schema_migrations"))
                done = {version for (version,) in cursor.fetchall()}
    finally:
        connection.close()
    return [
        f"{m.version:04d}_{m.name}" for m in available_migrations() if m.version not in done
    ]
