"""Crash the PostgreSQL primary: a worker's claim and state writes carry on on the promoted standby.

A real primary and a synchronous streaming standby (``pg_basebackup -R``),
SwiftMail initialised on the primary and connected through the multi-host
URL with ``target_session_attrs=read-write``. The primary is crashed
(``pg_ctl stop -m immediate``) while a state write is in flight and the
standby promoted by hand two seconds later (``pg_ctl promote``: the step
Patroni would take after its leader key expires). The in-flight write and
the next claim are retried once on the new primary; every write that was
acknowledged before the crash is still there (synchronous replication), and
nothing was applied twice. Measured (printed, never asserted): seconds from
the crash and from the promotion to the first successful retry.
"""

from __future__ import annotations

import os
import threading
import time

import psycopg2

from swiftmail_core import db
from swiftmail_core.db import failover
from swiftmail_core.db.targets import database_targets
from swiftmail_core.settings import load_settings
from swiftmail_core.transports import Outcome, SendResult
from tests.ha.conftest import install, measure

PROMOTE_AFTER = 2.0


def _commit_milliseconds(url: str, count: int = 200) -> dict[str, float]:
    """Time small commits with and without waiting for the synchronous standby."""
    connection = psycopg2.connect(url)
    try:
        with connection.cursor() as cursor:
            cursor.execute("CREATE TABLE IF NOT EXISTS ha_commit_probe (n int)")
            connection.commit()
            timings = {}
            for mode in ("local", "on"):
                cursor.execute(f"SET synchronous_commit = {mode}")
                connection.commit()
                started = time.perf_counter()
                for n in range(count):
                    cursor.execute("INSERT INTO ha_commit_probe VALUES (%s)", (n,))
                    connection.commit()
                timings[mode] = round((time.perf_counter() - started) * 1000 / count, 3)
            return timings
    finally:
        connection.close()


def test_claims_and_state_writes_survive_a_promotion(postgres_pair, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_core.sending import outbox
    from swiftmail_core.sending.lifecycle import send_transactional
    from swiftmail_core.tenants import create_tenant

    environ = install(postgres_pair.url("swiftmail_ha"),
                      postgres_pair.url("postgres", user="postgres"), tmp_path)
    postgres_pair.start_standby()
    commit_ms = _commit_milliseconds(postgres_pair.admin_url("primary", "swiftmail_ha"))
    settings = load_settings(environ=environ)
    targets = database_targets(settings)
    db.connect(targets, pool_size=4, failover_wait_seconds=settings.db_failover_wait_seconds)
    try:
        tenant = create_tenant(f"ha-{os.getpid()}")
        ids = [send_transactional(tenant.id, to=f"r{i}@example.com", from_email="s@example.com",
                                  subject="s", text="t")["id"] for i in range(20)]
        before = outbox.claim_batch("ha-worker-1", limit=10)
        outbox.record_results(before, [SendResult(m.ledger_id, Outcome.ACCEPTED) for m in before])
        acknowledged = {m.ledger_id for m in before}
        during = outbox.claim_batch("ha-worker-2", limit=10)
        assert len(before) == len(during) == 10

        stamps: dict[str, float] = {}
        calls: list[int] = []

        @failover.retry_after_failover
        def record_slowly() -> None:
            # The state write of ``during``, held open so the crash finds it in flight.
            calls.append(1)
            with db.system_tx() as database:
                database.execute_sql(
                    "UPDATE messages SET last_error = 'in flight' WHERE id = ANY(%s)",
                    ([m.ledger_id for m in during],))
                if len(calls) == 1:
                    database.execute_sql("SELECT pg_sleep(30)")
            outbox.record_results(
                during, [SendResult(m.ledger_id, Outcome.ACCEPTED) for m in during])

        def crash_then_promote() -> None:
            time.sleep(1.0)  # record_slowly is asleep inside its transaction
            stamps["crashed"] = time.monotonic()
            postgres_pair.crash("primary")
            time.sleep(PROMOTE_AFTER)
            postgres_pair.promote("standby")
            stamps["promoted"] = time.monotonic()

        chaos = threading.Thread(target=crash_then_promote, daemon=True)
        chaos.start()
        record_slowly()
        stamps["state_write_retried"] = time.monotonic()
        chaos.join(60)
        after = outbox.claim_batch("ha-worker-3", limit=10)
        stamps["claimed_after"] = time.monotonic()

        assert len(calls) == 2
        assert not after  # nothing left to claim: all 20 are accepted
        new_primary = psycopg2.connect(postgres_pair.admin_url("standby", "swiftmail_ha"))
        try:
            with new_primary.cursor() as cursor:
                cursor.execute("SELECT pg_is_in_recovery()")
                assert cursor.fetchone()[0] is False
                cursor.execute("SELECT id, status, attempts FROM messages WHERE id = ANY(%s)",
                               (ids,))
                rows = {row[0]: (row[1], row[2]) for row in cursor.fetchall()}
                cursor.execute("SELECT count(*), count(DISTINCT source_key) FROM events "
                               "WHERE type = 'accepted'")
                events, distinct = cursor.fetchone()
        finally:
            new_primary.close()
        assert all(rows[i] == ("accepted", 1) for i in acknowledged)  # kept by sync replication
        assert {status for status, _ in rows.values()} == {"accepted"}
        assert events == distinct == 20  # each answer counted once
        measure("postgres_promotion",
                promote_after_crash=PROMOTE_AFTER,
                commit_ms_async=commit_ms["local"], commit_ms_synchronous=commit_ms["on"],
                state_write_seconds_after_crash=round(
                    stamps["state_write_retried"] - stamps["crashed"], 2),
                state_write_seconds_after_promotion=round(
                    stamps["state_write_retried"] - stamps["promoted"], 2),
                claim_seconds_after_promotion=round(
                    stamps["claimed_after"] - stamps["promoted"], 2))
    finally:
        db.disconnect()
