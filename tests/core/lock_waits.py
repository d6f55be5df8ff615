"""Deterministic lock races for tests: wait until a session waits for a row lock.

The deadlock regression tests pause one side between its two locks, start
the other, and go on only once PostgreSQL shows the other waiting: no sleep
decides the interleaving.
"""

from __future__ import annotations

import time

import psycopg2

#: What ``retry_on_conflict`` logs when a transaction lost a deadlock and runs again.
RETRIED = "must be retried"


def wait_until_waiting(dsn: str, query_prefix: str) -> None:
    """Return once a session (of ``dsn``'s role) running ``query_prefix...`` waits for a lock.

    A role sees the statements of its own sessions only, so ``dsn`` is the
    role the waiting side runs as.
    """
    watcher = psycopg2.connect(dsn)
    watcher.autocommit = True  # a fresh activity snapshot each query
    try:
        with watcher.cursor() as cursor:
            for _ in range(1200):
                cursor.execute("SELECT count(*) FROM pg_stat_activity WHERE "
                               "wait_event_type = 'Lock' AND query LIKE %s",
                               (query_prefix.replace("%", r"\%") + "%",))
                if cursor.fetchone()[0]:
                    return
                time.sleep(0.05)
    finally:
        watcher.close()
    raise AssertionError(f"no session waited for a lock in: {query_prefix}")


def tenant_delete_statement(tenant_id: object) -> str:
    """The start of the statement ``swiftmail tenant delete`` waits in."""
    return f"DELETE FROM tenants WHERE id = '{tenant_id}'"
