"""Moving a tenant between workers while its campaign sends loses and duplicates nothing.

The tenant is isolated to shards of its own (``swiftmail citus
isolate-tenant``, Citus's ``isolate_tenant_to_new_shard``) and moved to the
other worker (``swiftmail citus move-tenant``, ``citus_move_shard_placement``)
while a worker thread drains its campaign and one batch is leased but not
yet sent; that batch is sent and recorded after the move.
"""

from __future__ import annotations

import logging
import threading
import traceback

from swiftmail_core.db import tenant_tx
from swiftmail_core.db.citus import citus_findings, tenant_placement
from swiftmail_core.sending import outbox, sweeper
from swiftmail_core.sending.worker import SendingWorker
from tests.citus.test_sending import new_caller, run_until_idle, start_campaign
from tests.cli_helpers import run_swiftmail

RECIPIENTS = 160


def test_a_tenant_moves_while_its_campaign_sends(cluster_app, sink, citus_environ,  # type: ignore[no-untyped-def]
                                                 citus_runtime, citus_cluster) -> None:
    settings, plugins, client, _ = cluster_app
    targets = citus_runtime.targets
    caller = new_caller(client, "move")
    tenant = str(caller.tenant_id)
    campaign_id = start_campaign(caller, RECIPIENTS, "move.example.test")
    sweeper.tick(settings, plugins)  # the audience: RECIPIENTS queued rows
    worker = SendingWorker(settings, plugins)
    assert worker.process_batch() == 20  # sent before the move
    in_flight = outbox.claim_batch("in-flight", limit=20)  # leased across the move
    assert len(in_flight) == 20
    before = tenant_placement(targets, tenant)

    failures: list[str] = []

    def drain() -> None:
        # Like the worker: a tick that fails is logged and the next one runs; a
        # failed batch is a failure here (its rows would wait for their lease).
        try:
            for _ in range(60):
                try:
                    sweeper.tick(settings, plugins)
                except Exception:
                    logging.getLogger(__name__).exception("tick failed during the move")
                if not worker.drain(30) and not sweeper.has_due_work():
                    return
        except BaseException:  # reported by the main thread
            failures.append(traceback.format_exc())

    sender = threading.Thread(target=drain, name="sending-during-move")
    sender.start()
    try:
        isolated = run_swiftmail("citus", "isolate-tenant", tenant, env=citus_environ,
                                 timeout=180)
        assert isolated.returncode == 0, isolated.stdout + isolated.stderr
        other = next(f"127.0.0.1:{port}" for port in citus_cluster.worker_ports
                     if f"127.0.0.1:{port}" != tenant_placement(targets, tenant).node)
        moved = run_swiftmail("citus", "move-tenant", tenant, "--to", other,
                              env=citus_environ, timeout=180)
        assert moved.returncode == 0, moved.stdout + moved.stderr
    finally:
        sender.join(240)
    assert not sender.is_alive() and not failures, failures

    after = tenant_placement(targets, tenant)
    assert after.node == other and after.shard_id != before.shard_id
    where = run_swiftmail("citus", "where", tenant, env=citus_environ, timeout=60)
    assert f"on {other}" in where.stdout, where.stdout + where.stderr

    # The batch leased before the move is sent and recorded after it.
    messages, unrenderable = worker.composer.compose(in_flight)
    assert not unrenderable
    results = plugins.transport("sink").send(messages)
    outbox.record_results(in_flight, results,
                          message_ids={m.ledger_id: m.message_id for m in messages})
    run_until_idle(settings, plugins)

    ours = {address: count for address, count in sink.handler.per_recipient.items()
            if address.endswith("@move.example.test")}
    assert len(ours) == RECIPIENTS and set(ours.values()) == {1}
    with tenant_tx(caller.tenant_id) as database:
        statuses = dict(database.execute_sql(
            "SELECT status, count(*) FROM messages WHERE tenant_id = %s AND campaign_id = %s "
            "GROUP BY status", (tenant, campaign_id)).fetchall())
    assert statuses == {"accepted": RECIPIENTS}
    assert caller.get(f"/v1/campaigns/{campaign_id}").json["status"] == "sent"
    # The new shards carry FORCE row-level security and every policy.
    bad = [finding for finding in citus_findings(targets) if not finding.ok]
    assert bad == []
