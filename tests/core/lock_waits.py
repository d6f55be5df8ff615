"""Deterministic lock races for tests: wait until a session waits for a row lock.

The deadlock regression tests pause one side between its two locks, start
the other, and go on only once PostgreSQL shows the other waiting: no sleep
decides the interleaving. ``race`` runs both sides that way.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

import psycopg2

from swiftmail_core.tenants import delete_tenant

#: What ``retry_on_conflict`` logs when a transaction lost a deadlock and runs again.
RETRIED = "must be retried"

#: How long each side of a ``race`` may run on after its release; longer fails the test.
JOIN_SECONDS = 120


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


def race(holder: Callable[[], object], waiter: Callable[[], object], *,
         holds: Callable[[], object], waits: Callable[[], object],
         release: Callable[[], object]) -> tuple[list[BaseException], list[BaseException]]:
    """Run ``holder`` and then ``waiter`` in threads, racing for a lock; return what each raised.

    ``holder`` starts first and ``holds()`` returns once it holds the lock;
    then ``waiter`` starts and ``waits()`` returns once it waits for that lock
    (``wait_until_waiting``). Both fail by raising or by returning False (as
    ``Event.wait`` does on its timeout). Then, or as soon as a step fails,
    ``release()`` lets ``holder`` go on, and the started threads are joined:
    one still running ``JOIN_SECONDS`` later fails the test instead of hanging it.
    """
    holder_errors: list[BaseException] = []
    waiter_errors: list[BaseException] = []
    started: list[threading.Thread] = []
    try:
        _start(holder, holder_errors, "holder", started)
        assert holds() is not False, "the holder never took its lock"
        _start(waiter, waiter_errors, "waiter", started)
        assert waits() is not False, "the waiter never waited for the holder's lock"
    finally:
        release()
        for thread in started:
            thread.join(JOIN_SECONDS)
        stuck = [thread.name for thread in started if thread.is_alive()]
        assert not stuck, f"still running {JOIN_SECONDS}s after the release: {stuck}"
    return holder_errors, waiter_errors


def race_tenant_delete(work: Callable[[], object], tenant_id: object, dsn: str,
                       holding: threading.Event, go: threading.Event,
                       ) -> tuple[list[BaseException], list[BaseException]]:
    """``race`` ``work`` against ``swiftmail tenant delete``; return what each raised.

    ``work`` sets ``holding`` once it holds its first lock and then waits for
    ``go``; the delete starts then and ``go`` is set once it waits for a row
    lock, as seen by ``dsn`` (the system role, which the delete runs as).
    """
    return race(work, lambda: delete_tenant(str(tenant_id)),
                holds=lambda: holding.wait(60),
                waits=lambda: wait_until_waiting(dsn, tenant_delete_statement(tenant_id)),
                release=go.set)


def _start(work: Callable[[], object], errors: list[BaseException], name: str,
           started: list[threading.Thread]) -> None:
    """Start a daemon thread running ``work`` that keeps in ``errors`` what it raised."""
    def run() -> None:
        try:
            work()
        except BaseException as ex:  # NOTE: returned by race
            errors.append(ex)

    thread = threading.Thread(target=run, name=f"race-{name}", daemon=True)
    thread.start()
    started.append(thread)
