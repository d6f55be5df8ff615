"""Riding out a PostgreSQL failover: tell a lost server from a failed statement, retry once.

When the primary dies (or is shut down for a switchover), every connection
to it fails: in the middle of a statement, at COMMIT, or when the pool hands
out an idle one. PostgreSQL rolls back whatever was not committed, so a
transaction that failed this way left nothing half-written; but a failure
at COMMIT leaves its outcome unknown to us. Only transactions that are safe
to run twice may therefore be repeated, and they say so by using
``retry_after_failover``:

* a claim (``outbox.claim_batch``): if the lost COMMIT had landed, the run
  again finds the rows already leased to its owner and returns them, so no
  second batch is taken;
* state writes (``state.apply_reports``, ``outbox.release``): guarded by the
  lease and the transition table, events deduplicated by source key, so a
  second run changes nothing the first one made.

The retry waits (up to ``db_failover_wait_seconds``) until a fresh
connection reaches a server that accepts writes, drops the pool's idle
connections (they point at the dead server), then runs the function once
more. A second failure is raised. Nothing is retried inside an enclosing
transaction, and errors that are not a lost server (a constraint, a
timeout, bad credentials) are raised at once.
"""

from __future__ import annotations

import functools
import logging
import time
from collections.abc import Callable
from typing import Any, TypeVar

import peewee
import psycopg2

from swiftmail_core.db.conflicts import error_chain

log = logging.getLogger(__name__)
F = TypeVar("F", bound=Callable[..., Any])

#: SQLSTATEs meaning the server went away or cannot take writes: class 08
#: (connection exception) is matched by prefix; admin_shutdown, crash_shutdown,
#: cannot_connect_now; read_only_sql_transaction (we reached a standby).
LOST_SERVER_STATES = frozenset({"57P01", "57P02", "57P03", "25006"})
#: Connection errors without an SQLSTATE that no wait will cure.
NOT_A_FAILOVER = ("authentication failed", "does not exist", "no pg_hba.conf entry",
                  "password", "permission denied")
PROBE_INTERVAL = 0.5


class _Config:
    probe_dsn: str | None = None
    wait_seconds: float = 30.0
    pools: tuple[Any, ...] = ()


def configure(probe_dsn: str, wait_seconds: float, pools: tuple[Any, ...]) -> None:
    """Set the DSN to probe for a writable primary, the wait, and the pools to refresh."""
    _Config.probe_dsn = probe_dsn
    _Config.wait_seconds = float(wait_seconds)
    _Config.pools = pools


def is_lost_server(ex: BaseException) -> bool:
    """True when ``ex`` says the server went away or cannot take writes."""
    for error in error_chain(ex):
        if not isinstance(error, psycopg2.Error | peewee.OperationalError |
                          peewee.InterfaceError | peewee.InternalError):
            continue
        code = getattr(error, "pgcode", None)
        if code is not None:
            if code.startswith("08") or code in LOST_SERVER_STATES:
                return True
            continue
        if isinstance(error, psycopg2.OperationalError | psycopg2.InterfaceError):
            text = str(error).lower()
            return not any(marker in text for marker in NOT_A_FAILOVER)
    return False


def writable_primary_answers(dsn: str) -> bool:
    """Connect afresh and tell whether the server accepts writes."""
    try:
        connection = psycopg2.connect(dsn)
    except psycopg2.Error:
        return False
    try:
        with connection.cursor() as cursor:
            cursor.execute("SELECT pg_is_in_recovery()")
            row = cursor.fetchone()
            return row is not None and not row[0]
    except psycopg2.Error:
        return False
    finally:
        connection.close()


def wait_for_primary(seconds: float | None = None) -> bool:
    """Wait until a writable primary answers (True) or ``seconds`` pass (False)."""
    deadline = time.monotonic() + (_Config.wait_seconds if seconds is None else seconds)
    if _Config.probe_dsn is None:
        return False
    while True:
        if writable_primary_answers(_Config.probe_dsn):
            return True
        if time.monotonic() >= deadline:
            return False
        time.sleep(PROBE_INTERVAL)


def _in_transaction() -> bool:
    return any(pool.database is not None and pool.in_transaction() for pool in _Config.pools)


def _drop_idle_connections() -> None:
    for pool in _Config.pools:
        if pool.database is not None:
            pool.close_idle()


def retry_after_failover(function: F) -> F:
    """Run ``function``; if the server was lost, wait for a primary and run it once more.

    Only for functions whose whole transaction is safe to repeat.
    """
    @functools.wraps(function)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return function(*args, **kwargs)
        except Exception as ex:
            if not is_lost_server(ex) or _in_transaction():
                raise
            started = time.monotonic()
            log.warning("database connection lost in %s (%s); waiting for a primary",
                        function.__qualname__, str(ex).strip().splitlines()[0] if str(ex) else
                        type(ex).__name__)
            _drop_idle_connections()
            found = wait_for_primary()
            log.warning("retrying %s after %.1f s (%s)", function.__qualname__,
                        time.monotonic() - started,
                        "primary answers" if found else "no primary yet")
            return function(*args, **kwargs)

    return wrapper  # type: ignore[return-value]
