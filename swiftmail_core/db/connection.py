"""The app and system database handles, and the only ways to use them.

``tenant_tx(tenant_id)`` is the one door to tenant data: it opens the
outermost transaction on the app role's connection and sets the tenant with
``SET LOCAL swiftmail.tenant_id``, which PostgreSQL forgets at commit or
rollback, so a pooled connection never carries a tenant over (on Citus,
``SET LOCAL citus.propagate_set_commands = 'local'`` carries it to the workers).
``system_tx()`` is the narrow door for cross-tenant machinery.
"""

from __future__ import annotations

import threading
import uuid
from collections.abc import Iterator
from contextlib import contextmanager

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
    for database in (app_db, system_db):
        if database.database is not None:
            database.close_all()


def current_tenant() -> uuid.UUID | None:
    """Return the tenant of the enclosing ``tenant_tx`` on this thread, if any."""
    return getattr(_state, "tenant_id", None)


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
    with app_db.connection_context(), app_db.atomic():
        # APPSEC: SET LOCAL, not set_config(): on Citus only SET LOCAL (with
        # propagate_set_commands) reaches the workers that evaluate the policies; on plain
        # PostgreSQL the citus.* line only sets a harmless placeholder. The value is
        # interpolated client-side, but only ever as the text of a parsed UUID.
        app_db.execute_sql(_SET_TENANT % {"tenant": str(tenant)})
        _state.tenant_id = tenant
        try:
            yield app_db
        finally:
            _state.tenant_id = None


@contextmanager
def system_tx() -> Iterator[PooledPostgresqlDatabase]:
    """Run the block in one transaction as the narrow cross-tenant system role."""
    if system_db.in_transaction():
        raise TenantIsolationError("system_tx cannot nest: open it outermost")
    with system_db.connection_context(), system_db.atomic():
        yield system_db
