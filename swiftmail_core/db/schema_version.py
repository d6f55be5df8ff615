"""Whether this code may run on the database's schema (start-up check, `doctor`).

The code's schema version is the number of its newest migration. A schema is
the set of migrations applied to the database, plus the oldest code it still
serves: the largest ``-- oldest-compatible-code: NNNN`` a migration declared
(recorded in ``schema_migrations`` when it was applied; 0 when none did).

This code runs on a database when

* every migration it ships is applied (else the schema is older than the
  code: run ``swiftmail migrate`` first), and
* the schema's oldest compatible code is not newer than this code (else a
  newer release applied a migration that breaks this code: upgrade this host,
  or restore the database from before that migration to roll back).

Migrations that only add (tables, nullable columns, indexes, functions) keep
older code running, which is what makes a rolling upgrade possible:
migrations first, then hosts one by one. A migration that removes or changes
what older code uses declares the oldest code that copes with it.
"""

from __future__ import annotations

import dataclasses
import logging

import psycopg2
import psycopg2.errors

from swiftmail_core.db.migrate import available_migrations
from swiftmail_core.db.targets import DatabaseTargets, Role
from swiftmail_core.errors import ConfigurationError

log = logging.getLogger(__name__)

#: The migration that made the schema readable without the owner role.
STATE_MIGRATION = 176


class SchemaVersionError(ConfigurationError):
    """This code and the database's schema do not fit together."""

    problem_type = "schema-version"
    title = "Schema version mismatch"


@dataclasses.dataclass(frozen=True)
class SchemaState:
    """What the database says about its schema."""

    #: Versions of every applied migration.
    applied: frozenset[int]
    #: The oldest code schema version the database still serves (0: any).
    oldest_compatible_code: int

    @property
    def version(self) -> int:
        """Return the newest applied migration (0 for an empty database)."""
        return max(self.applied, default=0)


def code_schema_version() -> int:
    """Return the schema version this code was written for (its newest migration)."""
    return available_migrations()[-1].version


def read_state(targets: DatabaseTargets, role: Role = "system") -> SchemaState | None:
    """Read the schema state as ``role``; None when the database predates the check.

    Raises ``psycopg2.OperationalError`` when the database cannot be reached.
    """
    connection = psycopg2.connect(targets.dsn(role), connect_timeout=10)
    try:
        with connection, connection.cursor() as cursor:
            try:
                cursor.execute("SELECT versions, oldest_compatible_code "
                               "FROM swiftmail_schema_state()")
            except psycopg2.errors.UndefinedFunction:
                return None
            versions, oldest = cursor.fetchone()
    finally:
        connection.close()
    return SchemaState(frozenset(versions or ()), oldest or 0)


def problem(state: SchemaState | None) -> str | None:
    """Return why this code must not run on ``state``'s schema, or None when it may."""
    shipped = available_migrations()
    ours = shipped[-1].version
    if state is None:
        return (f"the database schema is older than this code (schema {ours:04d}; migration "
                f"{STATE_MIGRATION:04d} and later are not applied): run `swiftmail migrate` "
                "first")
    missing = [m for m in shipped if m.version not in state.applied]
    if missing:
        names = ", ".join(f"{m.version:04d}_{m.name}" for m in missing[:3])
        more = f" and {len(missing) - 3} more" if len(missing) > 3 else ""
        return (f"the database schema ({state.version:04d}) is older than this code "
                f"(schema {ours:04d}; not applied: {names}{more}): run `swiftmail migrate` "
                "first")
    if state.oldest_compatible_code > ours:
        return (f"the database schema ({state.version:04d}) needs code of schema "
                f"{state.oldest_compatible_code:04d} or newer and this code is "
                f"{ours:04d}: upgrade this host, or restore the database from before the "
                "upgrade to roll back (docs/operations.md)")
    return None


def describe(state: SchemaState | None) -> str:
    """Return one line naming both schema versions, for logs and ``doctor``."""
    ours = code_schema_version()
    if state is None:
        return f"code {ours:04d}, database before {STATE_MIGRATION:04d}"
    return (f"code {ours:04d}, database {state.version:04d} "
            f"(serves code from {state.oldest_compatible_code:04d})")


def check_schema(targets: DatabaseTargets) -> None:
    """Refuse to start (``SchemaVersionError``) when this code does not fit the schema.

    A database that cannot be reached is logged and let through: the process
    then waits for it as it would anyway, and checks again at its next start.
    """
    try:
        state = read_state(targets)
    except psycopg2.OperationalError as ex:
        log.warning("schema version not checked: %s", str(ex).strip().splitlines()[0])
        return
    reason = problem(state)
    if reason:
        raise SchemaVersionError(reason)
    if state is not None and state.version > code_schema_version():
        log.info("the database schema is newer than this code and serves it: %s",
                 describe(state))
