"""The tenant-isolation posture audit (`swiftmail doctor`, and the tests).

It reads PostgreSQL's catalogs and fails when any tenant table lacks FORCE
row-level security or its tenant policy, when a unique constraint or foreign
key omits ``tenant_id``, when the app or system role could bypass RLS, own a
table or TRUNCATE, or when a view is not ``security_invoker``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterator
from typing import Any

import psycopg2

from swiftmail_core.db.targets import DatabaseTargets

GLOBAL_TABLES = ("tenants", "users", "scheduler_ticks")  # RLS'd, not tenant-keyed
OWNER_ONLY_TABLES = ("schema_migrations",)


@dataclasses.dataclass(frozen=True)
class Finding:
    """One audit result; a failed ``warning`` is reported without failing ``doctor``."""

    ok: bool
    check: str
    detail: str = ""
    warning: bool = False


def audit(targets: DatabaseTargets) -> list[Finding]:
    """Run every posture check against a live database; return findings."""
    connection = psycopg2.connect(targets.dsn("owner"))
    try:
        with connection.cursor() as cursor:
            return list(_run(cursor, targets.role_names))
    finally:
        connection.close()


def failures(findings: list[Finding]) -> list[Finding]:
    """Return the failed findings."""
    return [finding for finding in findings if not finding.ok]


def _run(cursor: Any, roles: dict[str, str]) -> Iterator[Finding]:
    app, system = roles["app"], roles["system"]
    for role in (app, system):
        cursor.execute(
            "SELECT rolsuper, rolbypassrls, rolcreaterole, rolcreatedb "
            "FROM pg_roles WHERE rolname = %s",
            (role,),
        )
        row = cursor.fetchone()
        if row is None:
            yield Finding(False, f"role {role} exists", "missing: run `swiftmail init`")
            continue
        superuser, bypass, createrole, createdb = row
        yield Finding(not superuser, f"role {role} is not superuser")
        yield Finding(not bypass, f"role {role} has no BYPASSRLS")
        yield Finding(not (createrole or createdb), f"role {role} cannot create roles or databases")
        cursor.execute(
            "SELECT string_agg(c.relname, ', ') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND pg_get_userbyid(c.relowner) = %s",
            (role,),
        )
        owned = cursor.fetchone()[0]
        yield Finding(owned is None, f"role {role} owns no relation", owned or "")
        cursor.execute(
            "SELECT string_agg(c.relname, ', ') FROM pg_class c "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') "
            "AND has_table_privilege(%s, c.oid, 'TRUNCATE')",
            (role,),
        )
        truncatable = cursor.fetchone()[0]
        yield Finding(truncatable is None, f"role {role} cannot TRUNCATE", truncatable or "")

    cursor.execute(
        "SELECT c.relname, c.relrowsecurity, c.relforcerowsecurity, c.relkind, c.relispartition, "
        "  EXISTS (SELECT 1 FROM pg_attribute a WHERE a.attrelid = c.oid "
        "          AND a.attname = 'tenant_id' AND NOT a.attisdropped) "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') ORDER BY c.relname"
    )
    tables = cursor.fetchall()
    tenant_tables = []
    for name, rls, force, _kind, is_partition, has_tenant in tables:
        if name in OWNER_ONLY_TABLES:
            for role in (app, system):
                cursor.execute(
                    "SELECT has_table_privilege(%s, %s, 'SELECT,INSERT,UPDATE,DELETE')",
                    (role, name),
                )
                yield Finding(not cursor.fetchone()[0], f"{name} is not reachable by {role}")
            continue
        if is_partition:
            cursor.execute(
                "SELECT has_table_privilege(%s, %s, 'SELECT,INSERT,UPDATE,DELETE') "
                "OR has_table_privilege(%s, %s, 'SELECT,INSERT,UPDATE,DELETE')",
                (app, name, system, name),
            )
            yield Finding(
                not cursor.fetchone()[0],
                f"partition {name} is reachable only through its parent",
            )
            continue
        if not has_tenant and name not in GLOBAL_TABLES:
            yield Finding(False, f"table {name} has tenant_id", "every table is tenant-scoped")
            continue
        yield Finding(bool(rls and force), f"{name} has ENABLE and FORCE row level security")
        if has_tenant:
            tenant_tables.append(name)
            cursor.execute(
                "SELECT count(*) FROM pg_policies WHERE schemaname = 'public' AND tablename = %s "
                "AND %s = ANY(roles) AND cmd = 'ALL' "
                "AND qual LIKE %s AND with_check LIKE %s",
                (name, app, "%tenant_id = swiftmail_current_tenant()%",
                 "%tenant_id = swiftmail_current_tenant()%"),
            )
            yield Finding(
                cursor.fetchone()[0] == 1,
                f"{name} has the tenant policy (USING and WITH CHECK) for {app}",
            )
        cursor.execute(
            "SELECT count(*) FROM pg_policies WHERE schemaname = 'public' AND tablename = %s "
            "AND 'public' = ANY(roles)",
            (name,),
        )
        yield Finding(cursor.fetchone()[0] == 0, f"{name} has no policy for PUBLIC")

    for name in tenant_tables:
        cursor.execute(
            "SELECT i.indexrelid::regclass::text, "
            "  (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = i.indrelid "
            "   AND a.attnum = i.indkey[0]) "
            "FROM pg_index i WHERE i.indrelid = %s::regclass AND i.indisunique",
            (name,),
        )
        for index, first_column in cursor.fetchall():
            yield Finding(
                first_column == "tenant_id",
                f"unique {index} on {name} leads with tenant_id",
                f"leads with {first_column}" if first_column != "tenant_id" else "",
            )
        cursor.execute(
            "SELECT con.conname, "
            "  (SELECT a.attname FROM pg_attribute a WHERE a.attrelid = con.conrelid "
            "   AND a.attnum = con.conkey[1]), confrelid::regclass::text "
            "FROM pg_constraint con WHERE con.conrelid = %s::regclass AND con.contype = 'f'",
            (name,),
        )
        for constraint, first_column, referenced in cursor.fetchall():
            if referenced in GLOBAL_TABLES:
                continue
            yield Finding(
                first_column == "tenant_id",
                f"foreign key {constraint} on {name} includes tenant_id",
            )

    cursor.execute(
        "SELECT c.relname, coalesce(array_to_string(c.reloptions, ','), '') "
        "FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = 'public' AND c.relkind IN ('v', 'm') "
        # An extension's own views (Citus's citus_tables) are not ours to judge.
        "AND NOT EXISTS (SELECT 1 FROM pg_depend d WHERE d.classid = 'pg_class'::regclass "
        "AND d.objid = c.oid AND d.deptype = 'e')"
    )
    for name, options in cursor.fetchall():
        yield Finding("security_invoker=true" in options, f"view {name} is security_invoker")
    yield Finding(bool(tenant_tables), "tenant tables exist", "run `swiftmail migrate`")


def check_connectable(targets: DatabaseTargets) -> list[Finding]:
    """Try connecting as each role; return one finding per role."""
    found = []
    for role in ("owner", "app", "system"):
        try:
            psycopg2.connect(targets.dsn(role), connect_timeout=5).close()
        except psycopg2.OperationalError as ex:
            found.append(Finding(False, f"connect as {role} role", str(ex).strip().splitlines()[0]))
        else:
            found.append(Finding(True, f"connect as {role} role"))
    return found
