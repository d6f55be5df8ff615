"""Create the three roles and the database, given a superuser connection.

Idempotent: roles and the database are created when missing and their
attributes re-asserted when present, so `swiftmail init` can run again.
"""

from __future__ import annotations

import psycopg2
from psycopg2 import sql

from swiftmail_core.db.targets import DatabaseTargets
from swiftmail_core.errors import ConfigurationError, ServiceUnavailableError

# APPSEC: none of the roles may bypass row-level security or own anything it
# should not; the owner owns the schema but is itself subject to FORCE RLS.
ROLE_ATTRIBUTES = "LOGIN NOSUPERUSER NOCREATEDB NOCREATEROLE NOBYPASSRLS NOREPLICATION"


def bootstrap(targets: DatabaseTargets, passwords: dict[str, str | None]) -> list[str]:
    """Create or update roles and the database; return what was done."""
    done: list[str] = []
    try:
        admin = psycopg2.connect(targets.admin_dsn)
    except psycopg2.OperationalError as ex:
        raise ServiceUnavailableError(
            f"cannot connect as the database admin ({str(ex).strip()}): "
            "check database_admin_url / DATABASE_URL"
        ) from ex
    admin.autocommit = True
    try:
        with admin.cursor() as cursor:
            cursor.execute("SELECT rolsuper FROM pg_roles WHERE rolname = current_user")
            row = cursor.fetchone()
            if not row or not row[0]:
                raise ConfigurationError(
                    "database_admin_url must name a superuser: `swiftmail init` creates roles"
                )
            for role, name in targets.role_names.items():
                cursor.execute("SELECT 1 FROM pg_roles WHERE rolname = %s", (name,))
                verb = "ALTER" if cursor.fetchone() else "CREATE"
                statement = sql.SQL("{} ROLE {} " + ROLE_ATTRIBUTES).format(
                    sql.SQL(verb), sql.Identifier(name)
                )
                if passwords.get(role):
                    statement = statement + sql.SQL(" PASSWORD {}").format(
                        sql.Literal(passwords[role])
                    )
                cursor.execute(statement)
                if verb == "CREATE":
                    done.append(f"created role {name}")
            cursor.execute("SELECT 1 FROM pg_database WHERE datname = %s", (targets.database,))
            if not cursor.fetchone():
                cursor.execute(
                    sql.SQL("CREATE DATABASE {} OWNER {} ENCODING 'UTF8' TEMPLATE template0").format(
                        sql.Identifier(targets.database),
                        sql.Identifier(targets.role_names["owner"]),
                    )
                )
                done.append(f"created database {targets.database}")
            database = sql.Identifier(targets.database)
            cursor.execute(sql.SQL("REVOKE ALL ON DATABASE {} FROM PUBLIC").format(database))
            cursor.execute(
                sql.SQL("GRANT CONNECT, TEMPORARY ON DATABASE {} TO {}, {}").format(
                    database,
                    sql.Identifier(targets.role_names["app"]),
                    sql.Identifier(targets.role_names["system"]),
                )
            )
    finally:
        admin.close()
    return done
