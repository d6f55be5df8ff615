"""PostgreSQL: connection targets, bootstrap, migrations, tenant transactions, audit."""

from swiftmail_core.db.connection import (
    analytics_tx,
    app_db,
    connect,
    current_database,
    current_tenant,
    disconnect,
    is_distributed,
    system_db,
    system_tx,
    tenant_tx,
)

__all__ = [
    "analytics_tx",
    "app_db",
    "connect",
    "current_database",
    "current_tenant",
    "disconnect",
    "is_distributed",
    "system_db",
    "system_tx",
    "tenant_tx",
]
