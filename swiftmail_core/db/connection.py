"""The app and system database handles, and the only ways to use them.

``tenant_tx(tenant_id)`` is the one door to tenant data: it opens the
outermost transaction on the app role's connection and sets the tenant with
``SET LOCAL swiftmail.tenant_id``, which PostgreSQL forgets at commit or
rollback, so a pooled connection never carries a tenant over (on Citus,
``SET LOCAL citus.propagate_set_commands = 'local'`` carries it to the workers).
``system_tx()`` is the narrow door for cross-tenant machinery.
``analytics_tx(tenant_id)`` is ``tenant_tx`` for statistics reads: read-only,
on the ``analytics_database_url`` replica when one is set and reachable.
"""

from __future__ import annotations

import logging
import threading
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

from peewee import OperationalError
from playhouse.pool import PooledPostgresqlDatabase
from psycopg2.extensions import parse_dsn

from swiftmail_core.db import failover
from swiftmail_core.db.targets import DatabaseTargets
from swiftmail_core.errors import TenantIsolationError

TENANT_SETTING = "swiftmail.tenant_id"
_SET_TENANT = ("SET LOCAL citus.propagate_set_commands = 'local'; "
               f"SET LOCAL {TENANT_SETTING} = '%(tenant)s'")

# Deferred (peewee style): connect() initialises them at start-up.
app_db = PooledPostgresqlDatabase(None)
system_db = PooledPostgresqlDatabase(None)
#: The app role on the analytics replica; uninitialised when none is configured.
analytics_db = PooledPostgresqlDatabase(None)

log = logging.getLogger(__name__)
#: How long statistics read from the primary after the replica could not be reached.
REPLICA_RETRY_SECONDS = 30


class _ReplicaState:
    down_until = 0.0


_replica = _ReplicaState()

_state = threading.local()
_distributed: dict[str, bool] = {}


def connect(targets: DatabaseTargets, pool_size: int = 10,
            failover_wait_seconds: float = 30.0) -> None:
    """Point the app and system handles at their roles' connections.

    ``failover_wait_seconds``: how long ``failover.retry_after_failover``
    waits for a writable primary before its one retry.
    """
    for database, role in ((app_db, "app"), (system_db, "system")):
        params = parse_dsn(targets.dsn(role))  # type: ignore[arg-type]
        name = params.pop("dbname")
        database.init(
            name,
            max_connections=pool_size,
            stale_timeout=300,
            timeout=30,
            **params,
        )
    failover.configure(targets.dsn("system"), failover_wait_seconds, (app_db, system_db))
    if targets.analytics_dsn:
        params = parse_dsn(targets.analytics_dsn)
        analytics_db.init(params.pop("dbname"), max_connections=pool_size, stale_timeout=300,
                          timeout=30, **params)
    else:
        analytics_db.init(None)
    _replica.down_until = 0.0


def is_distributed() -> bool:
    """Return True when the database is a Citus coordinator (asked once per process).

    For the few statements whose fastest single-node form Citus cannot run;
    everything else is written once for both.
    """
    name = str(system_db.database)
    if name not in _distributed:
        query = "SELECT EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'citus')"
        if system_db.is_closed():
            with system_db.connection_context():
                _distributed[name] = bool(system_db.execute_sql(query).fetchone()[0])
        else:
            _distributed[name] = bool(system_db.execute_sql(query).fetchone()[0])
    return _distributed[name]


def disconnect() -> None:
    """Close every pooled connection (at shutdown and between tests)."""
    for database in (app_db, system_db, analytics_db):
        if database.database is not None:
            database.close_all()


def current_tenant() -> uuid.UUID | None:
    """Return the tenant of the enclosing ``tenant_tx`` on this thread, if any."""
    return getattr(_state, "tenant_id", None)


def current_database() -> PooledPostgresqlDatabase:
    """Return the handle of the enclosing ``tenant_tx`` or ``analytics_tx`` on this thread."""
    return getattr(_state, "database", None) or app_db


def _as_uuid(tenant_id: uuid.UUID | str) -> uuid.UUID:
    try:
        return tenant_id if isinstance(tenant_id, uuid.UUID) else uuid.UUID(str(tenant_id))
    except ValueError as ex:
        raise TenantIsolationError(f"tenant id {tenant_id!r} is not a UUID") from ex


@contextmanager
def tenant_tx(tenant_id: uuid.UUID | str) -> Iterator[PooledPostgresqlDatabase]:
    """Run the block in one transaction scoped to ``tenant_id``.

    APPSEC: it is the outermost transaction, so the setting and the work
    share one transaction and die together. Inside an open ``tenant_tx`` of
    the SAME tenant (the API's request transaction), it joins that transaction
    as a savepoint, so a service called by a request commits with the request
    (and its stored Idempotency-Key response) or not at all; any other nesting
    is refused.
    """
    tenant = _as_uuid(tenant_id)
    joined = current_tenant()
    if joined == tenant and app_db.in_transaction():
        with app_db.atomic():
            yield app_db
        return
    if app_db.in_transaction() or joined is not None:
        raise TenantIsolationError(
            "tenant_tx cannot nest inside another transaction: open it outermost"
        )
    with _scoped(app_db, tenant) as database:
        yield database


@contextmanager
def _scoped(database: PooledPostgresqlDatabase, tenant: uuid.UUID,
            read_only: bool = False) -> Iterator[PooledPostgresqlDatabase]:
    """Open the outermost transaction on ``database`` with the tenant set (tenant_tx's body)."""
    with database.connection_context(), database.atomic():
        if read_only:
            database.execute_sql("SET TRANSACTION READ ONLY")
        # APPSEC: SET LOCAL, not set_config(): on Citus only SET LOCAL (with
        # propagate_set_commands) reaches the workers that evaluate the policies; on plain
        # PostgreSQL the citus.* line only sets a harmless placeholder. The value is
        # interpolated client-side, but only ever as the text of a parsed UUID.
        database.execute_sql(_SET_TENANT % {"tenant": str(tenant)})
        _state.tenant_id, _state.database = tenant, database
        try:
            yield database
        finally:
            _state.tenant_id, _state.database = None, None


@contextmanager
def analytics_tx(tenant_id: uuid.UUID | str) -> Iterator[PooledPostgresqlDatabase]:
    """Run a statistics read in one read-only transaction scoped to ``tenant_id``.

    On the ``analytics_database_url`` replica when one is set (the same app
    role, row-level security and tenant setting as ``tenant_tx``); on the
    primary when none is set or the replica cannot be reached. Queries in
    the block use ``current_database()``. Never nested in another transaction.
    """
    tenant = _as_uuid(tenant_id)
    if current_tenant() is not None or app_db.in_transaction() or (
            analytics_db.database is not None and analytics_db.in_transaction()):
        raise TenantIsolationError(
            "analytics_tx cannot nest inside another transaction: open it outermost")
    database = app_db
    if analytics_db.database is not None and time.monotonic() >= _replica.down_until:
        try:
            analytics_db.connect(reuse_if_open=True)
            database = analytics_db
        except OperationalError as ex:
            # Not asked again for a while: each try costs a connect timeout.
            _replica.down_until = time.monotonic() + REPLICA_RETRY_SECONDS
            log.warning("analytics replica unreachable, reading from the primary for %d s: %s",
                        REPLICA_RETRY_SECONDS, ex)
    with _scoped(database, tenant, read_only=True) as scoped:
        yield scoped


@contextmanager
def system_tx() -> Iterator[PooledPostgresqlDatabase]:
    """Run the block in one transaction as the narrow cross-tenant system role."""
    if system_db.in_transaction():
        raise TenantIsolationError("system_tx cannot nest: open it outermost")
    with system_db.connection_context(), system_db.atomic():
        yield system_db
