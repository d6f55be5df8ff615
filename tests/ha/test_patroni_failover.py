"""Kill the Patroni leader's host: Patroni promotes the synchronous standby, SwiftMail carries on.

etcd and two Patroni-managed PostgreSQL 15 nodes on loopback
(``synchronous_mode: true``, ``ttl: 10``, ``loop_wait: 1``), SwiftMail
connected through the multi-host URL. The leader's Patroni and PostgreSQL
are SIGKILLed together, as a lost host goes; a worker's state write then
waits (``db_failover_wait_seconds``) for Patroni's automatic promotion and
runs once more on the new leader. Measured (printed, never asserted):
seconds from the kill to the promotion and to the worker's write.
"""

from __future__ import annotations

import os
import threading
import time

import psycopg2

from swiftmail_core import db
from swiftmail_core.db.targets import database_targets
from swiftmail_core.settings import load_settings
from swiftmail_core.transports import Outcome, SendResult
from tests.ha.conftest import install, measure
from tests.ha.patroni import LOOP_WAIT, TTL


def test_a_worker_carries_on_after_patroni_fails_over(patroni_cluster, tmp_path) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_core.sending import outbox
    from swiftmail_core.sending.lifecycle import send_transactional
    from swiftmail_core.tenants import create_tenant

    environ = install(patroni_cluster.url("swiftmail_ha"),
                      patroni_cluster.url("postgres", user="postgres"), tmp_path)
    settings = load_settings(environ=environ)
    db.connect(database_targets(settings), pool_size=4,
               failover_wait_seconds=settings.db_failover_wait_seconds)
    try:
        tenant = create_tenant(f"ha-patroni-{os.getpid()}")
        ids = [send_transactional(tenant.id, to=f"r{i}@example.com", from_email="s@example.com",
                                  subject="s", text="t")["id"] for i in range(20)]
        before = outbox.claim_batch("ha-worker-1", limit=10)
        outbox.record_results(before, [SendResult(m.ledger_id, Outcome.ACCEPTED) for m in before])
        during = outbox.claim_batch("ha-worker-2", limit=10)
        assert len(before) == len(during) == 10
        old_leader = patroni_cluster.leader()
        assert old_leader == "node1"

        stamps: dict[str, float] = {}

        def watch_promotion() -> None:
            while time.monotonic() - stamps["killed"] < 60:
                if patroni_cluster.leader() == "node2":
                    stamps["promoted"] = time.monotonic()
                    return
                time.sleep(0.1)

        stamps["killed"] = time.monotonic()
        patroni_cluster.kill(old_leader)
        watcher = threading.Thread(target=watch_promotion, daemon=True)
        watcher.start()
        outbox.record_results(during, [SendResult(m.ledger_id, Outcome.ACCEPTED) for m in during])
        stamps["written"] = time.monotonic()
        watcher.join(60)
        assert not outbox.claim_batch("ha-worker-3", limit=10)

        new_leader = psycopg2.connect(patroni_cluster.admin_url("node2", "swiftmail_ha"))
        try:
            with new_leader.cursor() as cursor:
                cursor.execute("SELECT status, count(*) FROM messages WHERE id = ANY(%s) "
                               "GROUP BY status", (ids,))
                statuses = dict(cursor.fetchall())
                cursor.execute("SELECT count(*), count(DISTINCT source_key) FROM events "
                               "WHERE type = 'accepted'")
                events, distinct = cursor.fetchone()
        finally:
            new_leader.close()
        assert statuses == {"accepted": 20}
        assert events == distinct == 20
        measure("patroni_failover", ttl=TTL, loop_wait=LOOP_WAIT,
                promotion_seconds_after_kill=round(stamps["promoted"] - stamps["killed"], 2),
                write_seconds_after_kill=round(stamps["written"] - stamps["killed"], 2),
                write_seconds_after_promotion=round(stamps["written"] - stamps["promoted"], 2))
    finally:
        db.disconnect()
