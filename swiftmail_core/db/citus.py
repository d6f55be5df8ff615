"""SwiftMail on Citus: tenant tables sharded by ``tenant_id``, colocated.

``setup_cluster`` (run by ``swiftmail init`` when the ``citus`` setting is on)
creates the roles, the database and the extension on every worker, registers
the workers with the coordinator, then ``distribute_tables`` makes the small
global tables (``tenants``, ``users``) reference tables and every table with a
``tenant_id`` column a hash-distributed table on it, all in one colocation
group, in foreign-key order. Row-level security, policies and grants are kept
exactly as on one node: Citus copies them to every shard (FORCE RLS is lifted
while a table's rows are copied, inside the transaction that puts it back:
the owner role cannot copy rows under it). ``swiftmail
migrate`` runs ``distribute_tables`` again, before each migration it applies
to an installed cluster and once at the end, so a table a migration adds is
distributed before the next migration meets it. ``citus_findings`` is what
``swiftmail doctor`` checks.

Tenant context reaches the workers because ``tenant_tx`` uses ``SET LOCAL``
with ``citus.propagate_set_commands = 'local'`` (see ``db.connection``).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Sequence
from typing import Any

import psycopg2
from psycopg2 import sql
from psycopg2.extensions import make_dsn, parse_dsn

from swiftmail_core.db.audit import Finding
from swiftmail_core.db.bootstrap import bootstrap
from swiftmail_core.db.targets import DatabaseTargets
from swiftmail_core.errors import ConfigurationError, ServiceUnavailableError

REFERENCE_TABLES = ("tenants", "users", "scheduler_ticks", "api_key_lookups")
DISTRIBUTION_COLUMN = "tenant_id"
#: Functions whose first argument is a tenant id and whose every statement names
#: that tenant: distributed by it and colocated with the tenant tables, so the
#: coordinator hands a call to the worker holding the tenant's shards and the whole
#: function runs there in one round trip (Citus's function call delegation).
TENANT_FUNCTIONS = ("swiftmail_claim_tenant(uuid, text, integer, double precision)",)


def _hostport(value: str) -> tuple[str, int]:
    host, sep, port = value.strip().rpartition(":")
    if not sep or not host or not port.isdigit():
        raise ConfigurationError(
            f"setting 'citus_workers' must list HOST:PORT entries, got {value!r}")
    return host.strip("[]"), int(port)


def _connect(dsn: str, what: str) -> Any:
    try:
        connection = psycopg2.connect(dsn, connect_timeout=10)
    except psycopg2.OperationalError as ex:
        raise ServiceUnavailableError(f"cannot connect to {what} ({str(ex).strip()})") from ex
    connection.autocommit = True
    return connection


def _admin_dsn(targets: DatabaseTargets, *, database: str | None = None,
               host: str | None = None, port: int | None = None) -> str:
    params = parse_dsn(targets.admin_dsn)
    if database is not None:
        params["dbname"] = database
    if host is not None:
        params["host"] = host
    if port is not None:
        params["port"] = str(port)
    return make_dsn(**params)


def setup_cluster(targets: DatabaseTargets, workers: Sequence[str],
                  passwords: dict[str, str | None]) -> list[str]:
    """Prepare every worker, register them, distribute the tables; return what was done."""
    done: list[str] = []
    for entry in workers:
        host, port = _hostport(entry)
        worker = dataclasses.replace(targets, admin_dsn=_admin_dsn(
            targets, database="postgres", host=host, port=port))
        done.extend(f"{entry}: {action}" for action in bootstrap(worker, passwords))
        with _connect(_admin_dsn(targets, database=targets.database, host=host, port=port),
                      f"Citus worker {entry}") as connection, connection.cursor() as cursor:
            cursor.execute("CREATE EXTENSION IF NOT EXISTS citus")
    coordinator = _connect(_admin_dsn(targets, database=targets.database), "the coordinator")
    try:
        with coordinator.cursor() as cursor:
            # NOTE: the coordinator is deliberately not added to the metadata: with it there,
            # tables referencing a new reference table turn into Citus local tables and a
            # partitioned one then fails to distribute ("child table is missing constraint").
            cursor.execute("CREATE EXTENSION IF NOT EXISTS citus")
            for entry in workers:
                host, port = _hostport(entry)
                cursor.execute("SELECT 1 FROM pg_dist_node WHERE nodename = %s AND nodeport = %s",
                               (host, port))
                if not cursor.fetchone():
                    cursor.execute("SELECT citus_add_node(%s, %s)", (host, port))
                    done.append(f"added worker {entry}")
            cursor.execute("SELECT count(*) FROM pg_dist_node WHERE groupid <> 0 AND isactive")
            if not cursor.fetchone()[0]:
                raise ConfigurationError(
                    "the Citus coordinator has no active worker: set citus_workers "
                    "(SWIFTMAIL_CITUS_WORKERS=host:port,...) or add them with citus_add_node")
        done.extend(distribute_tables(coordinator))
    finally:
        coordinator.close()
    return done


def _tenant_tables(cursor: Any) -> list[str]:
    """Return the tables with a tenant_id column, referenced tables first."""
    cursor.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "JOIN pg_attribute a ON a.attrelid = c.oid AND a.attname = %s AND NOT a.attisdropped "
        "WHERE n.nspname = 'public' AND c.relkind IN ('r', 'p') AND NOT c.relispartition "
        "ORDER BY c.relname", (DISTRIBUTION_COLUMN,))
    tables = [name for (name,) in cursor.fetchall() if name not in REFERENCE_TABLES]
    cursor.execute(
        "SELECT src.relname, dst.relname FROM pg_constraint k "
        "JOIN pg_class src ON src.oid = k.conrelid JOIN pg_class dst ON dst.oid = k.confrelid "
        "WHERE k.contype = 'f' AND src.relname = ANY(%s) AND dst.relname = ANY(%s) "
        "AND src.relname <> dst.relname", (tables, tables))
    needs: dict[str, set[str]] = {table: set() for table in tables}
    for source, target in cursor.fetchall():
        needs[source].add(target)
    ordered: list[str] = []
    while needs:
        ready = sorted(table for table, deps in needs.items() if not deps - set(ordered))
        if not ready:
            raise ConfigurationError(f"foreign keys form a cycle among {sorted(needs)}")
        ordered.extend(ready)
        for table in ready:
            del needs[table]
    return ordered


def distribute_tables(connection: Any) -> list[str]:
    """Make reference and distributed tables of what is still local; return what was done.

    Reference tables and tenant functions a migration has not created yet are
    skipped: ``swiftmail migrate`` calls this before each migration it applies
    to an installed cluster, so every migration meets its tables distributed.
    """
    done: list[str] = []
    with connection.cursor() as cursor:
        cursor.execute("SELECT logicalrelid::regclass::text FROM pg_dist_partition")
        already = {name for (name,) in cursor.fetchall()}
        for table in REFERENCE_TABLES:
            if table not in already and _exists(cursor, "to_regclass", table):
                _create_lifting_force(cursor, table, "SELECT create_reference_table(%s)",
                                      (table,))
                done.append(f"made {table} a reference table")
        anchor = None
        distributed = []
        for table in _tenant_tables(cursor):
            if table in already:
                anchor = anchor or table
                continue
            _create_lifting_force(
                cursor, table, "SELECT create_distributed_table(%s, %s, colocate_with => %s)",
                (table, DISTRIBUTION_COLUMN, anchor or "default"))
            anchor = anchor or table
            distributed.append(table)
            done.append(f"distributed {table} by {DISTRIBUTION_COLUMN}")
        # Rows a table held before it was distributed were copied to the shards; drop the
        # coordinator's hidden copy once no local table references it any more.
        for table in [*REFERENCE_TABLES, *distributed]:
            if table not in already and _exists(cursor, "to_regclass", table):
                cursor.execute("SELECT truncate_local_data_after_distributing_table(%s)",
                               (table,))
        for signature in TENANT_FUNCTIONS:
            if (_exists(cursor, "to_regprocedure", signature)
                    and not _function_delegated(cursor, signature)):
                cursor.execute(
                    "SELECT create_distributed_function(%s, '$1', colocate_with => %s)",
                    (signature, anchor or "messages"))
                done.append(f"distributed {signature} by its tenant argument")
    return done


def _exists(cursor: Any, lookup: str, name: str) -> bool:
    """Return True when ``name`` names a relation (to_regclass) or function (to_regprocedure)."""
    cursor.execute(sql.SQL("SELECT {}(%s) IS NOT NULL").format(sql.Identifier(lookup)), (name,))
    return bool(cursor.fetchone()[0])


def _create_lifting_force(cursor: Any, table: str, create: str,
                          args: tuple[str, ...]) -> None:
    """Run ``create`` (a Citus create_*_table call) on ``table``, FORCE RLS or not.

    Citus copies the rows a table already holds into its shards with COPY and
    refuses to under row-level security ("COPY FROM not supported with
    row-level security"), which FORCE RLS applies to the owner role
    ``swiftmail migrate`` runs as. FORCE is lifted for the call and put back
    in one transaction: a failure leaves it on, and the restored FORCE
    reaches every shard.
    """
    cursor.execute("SELECT relforcerowsecurity FROM pg_class WHERE oid = %s::regclass", (table,))
    if not cursor.fetchone()[0]:
        cursor.execute(create, args)
        return
    name = sql.Identifier(table)
    cursor.execute("BEGIN")
    try:
        # Sequential: in a transaction block Citus refuses parallel DDL on a table whose
        # foreign key references a reference table (tenants) the transaction touched.
        cursor.execute("SET LOCAL citus.multi_shard_modify_mode TO 'sequential'")
        cursor.execute(sql.SQL("ALTER TABLE {} NO FORCE ROW LEVEL SECURITY").format(name))
        cursor.execute(create, args)
        cursor.execute(sql.SQL("ALTER TABLE {} FORCE ROW LEVEL SECURITY").format(name))
    except BaseException:
        with contextlib.suppress(psycopg2.Error):  # a lost connection rolled back already
            cursor.execute("ROLLBACK")
        raise
    cursor.execute("COMMIT")


def _function_delegated(cursor: Any, signature: str) -> bool:
    """Return True when ``signature`` is a distributed function with a distribution argument."""
    cursor.execute(
        "SELECT EXISTS (SELECT 1 FROM pg_dist_object WHERE classid = 'pg_proc'::regclass "
        "AND objid = %s::regprocedure AND distribution_argument_index IS NOT NULL)",
        (signature,))
    return bool(cursor.fetchone()[0])


def distribute_new_tables(targets: DatabaseTargets) -> list[str]:
    """Distribute tables a migration added, as the owner role; return what was done."""
    with _connect(targets.dsn("owner"), "the coordinator as the owner role") as connection:
        return distribute_tables(connection)


def citus_findings(targets: DatabaseTargets) -> list[Finding]:
    """Check workers, every tenant table sharded and colocated, and the policies on shards."""
    try:
        connection = _connect(targets.dsn("owner"), "the coordinator as the owner role")
    except ServiceUnavailableError as ex:
        return [Finding(False, "Citus coordinator reachable", ex.detail)]
    findings: list[Finding] = []
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT 1 FROM pg_extension WHERE extname = 'citus'")
            if not cursor.fetchone():
                return [Finding(False, "Citus extension installed",
                                "run `swiftmail init --citus` against the coordinator")]
            cursor.execute("SELECT count(*) FROM pg_dist_node WHERE groupid <> 0 AND isactive")
            workers = cursor.fetchone()[0]
            findings.append(Finding(workers > 0, "Citus has active workers", f"{workers} active"))
            cursor.execute(
                "SELECT logicalrelid::regclass::text, partmethod, colocationid, "
                "column_to_column_name(logicalrelid, partkey) FROM pg_dist_partition")
            placed = {name: (method, group, column) for name, method, group, column
                      in cursor.fetchall()}
            for table in REFERENCE_TABLES:
                ok = placed.get(table, ("",))[0] == "n"
                findings.append(Finding(ok, f"{table} is a reference table",
                                        "" if ok else "run `swiftmail migrate`"))
            groups = set()
            for table in _tenant_tables(cursor):
                method, group, column = placed.get(table, ("", None, None))
                ok = method == "h" and column == DISTRIBUTION_COLUMN
                groups.add(group)
                findings.append(Finding(
                    ok, f"{table} is distributed by {DISTRIBUTION_COLUMN}",
                    "" if ok else "not distributed: run `swiftmail migrate`"))
                if ok:
                    findings.append(_policies_on_shards(cursor, table))
            findings.append(Finding(len(groups) == 1, "tenant tables are colocated",
                                    "" if len(groups) == 1 else f"colocation groups {groups}"))
            for signature in TENANT_FUNCTIONS:
                ok = _function_delegated(cursor, signature)
                findings.append(Finding(ok, f"{signature.partition('(')[0]} runs on the "
                                        "tenant's worker", "" if ok else "run `swiftmail migrate`"))
    finally:
        connection.close()
    return findings


def _policies_on_shards(cursor: Any, table: str) -> Finding:
    cursor.execute("SELECT count(*) FROM pg_policy WHERE polrelid = %s::regclass", (table,))
    expected = cursor.fetchone()[0]
    check = ("SELECT (c.relrowsecurity AND c.relforcerowsecurity)::int * "
             "(SELECT count(*) FROM pg_policy p WHERE p.polrelid = c.oid) "
             "FROM pg_class c WHERE c.oid = '%s'::regclass")
    cursor.execute("SELECT success, result FROM run_command_on_shards(%s, %s)", (table, check))
    bad = [result for success, result in cursor.fetchall()
           if not success or result != str(expected)]
    return Finding(not bad, f"{table} shards have FORCE RLS and its {expected} policies",
                   f"{len(bad)} shard(s) differ" if bad else "")



@dataclasses.dataclass(frozen=True)
class TenantPlacement:
    """Where one tenant's rows live: its shard group's anchor shard and node."""

    shard_id: int
    node: str

    @property
    def hostport(self) -> tuple[str, int]:
        """Return the node as (host, port)."""
        return _hostport(self.node)


#: The tenant table whose shard names a tenant's colocated shard group.
ANCHOR_TABLE = "messages"
#: Moves and splits block writes to the moved shards while they copy (logical
#: replication would need wal_level = logical on every node); SwiftMail's
#: writers wait, nothing fails.
TRANSFER_MODE = "block_writes"


def tenant_placement(targets: DatabaseTargets, tenant_id: str) -> TenantPlacement:
    """Return the shard and the node holding ``tenant_id``'s rows."""
    with _connect(_admin_dsn(targets, database=targets.database),
                  "the coordinator") as connection, connection.cursor() as cursor:
        return _placement(cursor, tenant_id)


def _placement(cursor: Any, tenant_id: str) -> TenantPlacement:
    cursor.execute(
        "SELECT s.shardid, s.nodename || ':' || s.nodeport FROM citus_shards s "
        "WHERE s.shardid = get_shard_id_for_distribution_column(%s, %s::uuid)",
        (ANCHOR_TABLE, tenant_id))
    row = cursor.fetchone()
    if row is None:
        raise ConfigurationError(f"no shard holds tenant {tenant_id}: is this a Citus install?")
    return TenantPlacement(int(row[0]), str(row[1]))


def isolate_tenant(targets: DatabaseTargets, tenant_id: str) -> TenantPlacement:
    """Give ``tenant_id`` shards of its own (every colocated table); return them.

    Idempotent: a tenant already alone in its shards keeps them.
    """
    with _connect(_admin_dsn(targets, database=targets.database),
                  "the coordinator") as connection, connection.cursor() as cursor:
        cursor.execute(
            "SELECT shardminvalue = shardmaxvalue FROM pg_dist_shard "
            "WHERE shardid = get_shard_id_for_distribution_column(%s, %s::uuid)",
            (ANCHOR_TABLE, tenant_id))
        alone = cursor.fetchone()
        if not (alone and alone[0]):
            cursor.execute(
                "SELECT isolate_tenant_to_new_shard(%s, %s::uuid, 'CASCADE', "
                "shard_transfer_mode => %s)", (ANCHOR_TABLE, tenant_id, TRANSFER_MODE))
        return _placement(cursor, tenant_id)


def move_tenant(targets: DatabaseTargets, tenant_id: str, to_node: str) -> TenantPlacement:
    """Move ``tenant_id``'s shard group to the worker ``to_node`` (HOST:PORT); return it.

    The shards move with every shard colocated with them, so isolate a big
    tenant first to move it alone.
    """
    host, port = _hostport(to_node)
    with _connect(_admin_dsn(targets, database=targets.database),
                  "the coordinator") as connection, connection.cursor() as cursor:
        placement = _placement(cursor, tenant_id)
        source_host, source_port = placement.hostport
        if (source_host, source_port) != (host, port):
            cursor.execute(
                "SELECT citus_move_shard_placement(%s, %s, %s, %s, %s, "
                "shard_transfer_mode => %s)",
                (placement.shard_id, source_host, source_port, host, port, TRANSFER_MODE))
        return _placement(cursor, tenant_id)
