"""A lost PostgreSQL server is told from a failed statement; safe work runs once more.

The server is lost here the way a failover loses it: the backend serving the
transaction is terminated (SQLSTATE 57P01, what a primary shutting down
sends) while a statement runs. The multi-host failover itself, with a
promoted standby, is in tests/ha/test_postgres_failover.py.
"""

from __future__ import annotations

import threading
import time

import psycopg2
import pytest

from swiftmail_core import db
from swiftmail_core.db import failover
from swiftmail_core.db.targets import connection_options, database_targets
from swiftmail_core.settings import load_settings


def _terminate_when_sleeping(admin_dsn: str, marker: str) -> threading.Thread:
    """Terminate the backend running the query tagged ``marker`` once it shows up."""
    def run() -> None:
        connection = psycopg2.connect(admin_dsn)
        connection.autocommit = True
        try:
            deadline = time.monotonic() + 10
            while time.monotonic() < deadline:
                with connection.cursor() as cursor:
                    cursor.execute(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
                        "WHERE query LIKE %s AND pid <> pg_backend_pid()", (f"%{marker}%",))
                    if cursor.fetchall():
                        return
                time.sleep(0.05)
        finally:
            connection.close()

    thread = threading.Thread(target=run, daemon=True)
    thread.start()
    return thread


def test_a_transaction_whose_server_is_lost_runs_once_more(runtime, targets) -> None:  # type: ignore[no-untyped-def]
    calls = []

    @failover.retry_after_failover
    def safe_to_repeat() -> int:
        calls.append(1)
        with db.system_tx() as database:
            if len(calls) == 1:
                killer = _terminate_when_sleeping(targets.admin_dsn, "failover-marker-1")
                database.execute_sql("SELECT pg_sleep(5) /* failover-marker-1 */")
                killer.join()
            return database.execute_sql("SELECT 41 + 1").fetchone()[0]

    assert safe_to_repeat() == 42
    assert len(calls) == 2


def test_failed_statements_are_not_retried(runtime) -> None:  # type: ignore[no-untyped-def]
    calls = []

    @failover.retry_after_failover
    def broken() -> None:
        calls.append(1)
        with db.system_tx() as database:
            database.execute_sql("SELECT 1 / 0")

    with pytest.raises(Exception, match="division by zero"):
        broken()
    assert len(calls) == 1


def test_nothing_is_retried_inside_an_enclosing_transaction(runtime, targets) -> None:  # type: ignore[no-untyped-def]
    calls = []

    @failover.retry_after_failover
    def inner(database) -> None:  # type: ignore[no-untyped-def]
        calls.append(1)
        killer = _terminate_when_sleeping(targets.admin_dsn, "failover-marker-2")
        database.execute_sql("SELECT pg_sleep(5) /* failover-marker-2 */")
        killer.join()

    with pytest.raises(Exception), db.system_tx() as database:  # any driver error
        inner(database)
    assert len(calls) == 1


def test_lost_server_errors_are_recognised() -> None:
    lost = psycopg2.OperationalError("server closed the connection unexpectedly")
    assert failover.is_lost_server(lost)
    assert not failover.is_lost_server(
        psycopg2.OperationalError('FATAL:  password authentication failed for user "x"'))
    assert not failover.is_lost_server(ValueError("no"))


def test_multi_host_url_finds_the_writable_server(test_environ, runtime) -> None:  # type: ignore[no-untyped-def]
    """A dead first host is skipped; keepalives and timeouts are set on every DSN."""
    params = psycopg2.extensions.parse_dsn(test_environ["DATABASE_URL"])
    url = (f"postgresql://127.0.0.1:1,{params.get('host', '127.0.0.1')}:"
           f"{params.get('port', '5432')}/{params['dbname']}?target_session_attrs=read-write")
    settings = load_settings(environ={**test_environ, "DATABASE_URL": url,
                                      "SWIFTMAIL_DB_CONNECT_TIMEOUT_SECONDS": "2"})
    targets = database_targets(settings)
    dsn = psycopg2.extensions.parse_dsn(targets.dsn("system"))
    assert dsn["target_session_attrs"] == "read-write"
    assert dsn["connect_timeout"] == "2"
    assert dsn["keepalives"] == "1" and dsn["tcp_user_timeout"] == "10000"
    assert failover.writable_primary_answers(targets.dsn("system"))


def test_a_dead_primary_is_given_up_before_patroni_promotes_a_standby(test_environ) -> None:  # type: ignore[no-untyped-def]
    """Connections to a lost primary are known dead before the role's Patroni fails over.

    An idle pooled connection to a host whose cable was cut is only found dead
    by TCP keepalives or ``tcp_user_timeout``; until then the pool's check on
    hand-out waits on it. With ``db_dead_connection_seconds`` at 30 (equal to
    Patroni's ttl) the first API request after a failover waited out those
    30 s on the dead host (the role's HA machine test, issue 13).
    """
    from tests.contrib.role_files import defaults

    settings = load_settings(environ={**test_environ, "DATABASE_URL": "postgresql://h/d"})
    options = {name: int(value) for name, value in connection_options(settings).items()}
    dead = settings.db_dead_connection_seconds
    assert options["tcp_user_timeout"] <= dead * 1000
    assert (options["keepalives_idle"] + options["keepalives_count"] * options["keepalives_interval"]
            <= dead)
    assert dead < int(defaults()["swiftmail_patroni_ttl"])
