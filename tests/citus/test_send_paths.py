"""Sending paths on the Citus cluster the end-to-end campaign does not cover.

Through SwiftMail's own relay (worker -> relay spool -> relay engine -> SMTP
sink, outcomes back into the ledger), lease reclaim after a worker dies, and
the due-tenant fairness of the claim against a large campaign. Each test
deletes the tenants it made, so no due work leaks into later tests.
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import time
import uuid
from collections.abc import Callable, Iterator

import pytest

from swiftmail_core.db import tenant_tx
from swiftmail_core.plugins import PluginManager
from swiftmail_core.sending import due_tenants, outbox, sweeper
from tests.citus.test_sending import Caller, new_caller, run_until_idle, start_campaign
from tests.core.sending.conftest import park_other_tenants_work

RELAYED = 12
CAMPAIGN_ROWS = 3000


@pytest.fixture
def callers(cluster_app) -> Iterator[Callable[[str], Caller]]:  # type: ignore[no-untyped-def]
    """Factory: a caller for a new tenant; every tenant made is deleted after the test."""
    from swiftmail_core.tenants import delete_tenant

    made: list[Caller] = []

    def factory(slug: str) -> Caller:
        made.append(new_caller(cluster_app[2], slug))
        return made[-1]

    yield factory
    for caller in made:
        delete_tenant(str(caller.tenant_id))


def _statuses(tenant_id: uuid.UUID) -> dict[str, int]:
    with tenant_tx(tenant_id) as database:
        return dict(database.execute_sql(
            "SELECT status, count(*) FROM messages WHERE tenant_id = %s GROUP BY status",
            (str(tenant_id),)).fetchall())


async def _deliver(relay, expected: int, timeout: float = 60) -> None:  # type: ignore[no-untyped-def]
    await relay.start()
    deadline = time.monotonic() + timeout
    while relay.delivered < expected and time.monotonic() < deadline:
        await asyncio.sleep(0.02)
    await asyncio.sleep(0.3)  # let the outcome sink write
    await relay.stop()


def test_a_campaign_goes_through_the_relay_on_the_cluster(cluster_app, sink, callers,  # type: ignore[no-untyped-def]
                                                          tmp_path) -> None:
    from swiftmail_relay.config import RelayConfig
    from swiftmail_relay.engine import Relay
    from swiftmail_relay.outcomes import record_outcomes
    from swiftmail_relay.sink import OutcomeSink

    from swiftmail_core.testing.dns import DnsServer

    settings, _, _, _ = cluster_app
    news = callers("relay-news")
    domain = f"r{uuid.uuid4().hex[:6]}.example.test"
    campaign_id = start_campaign(news, RELAYED, domain, transport="relay")
    spool_dir = tmp_path / "spool"
    configured = dataclasses.replace(settings, plugins={"relay": {"spool_dir": str(spool_dir)},
                                                        "relay_transport": {"mode": "handoff"}})
    plugins = PluginManager.load(configured)
    park_other_tenants_work(news.tenant_id)
    assert run_until_idle(configured, plugins) == RELAYED
    assert _statuses(news.tenant_id) == {"accepted": RELAYED}

    dns = DnsServer().start()
    dns.add(domain, "MX", f"10 mx.{domain}.")
    dns.add(f"mx.{domain}", "A", "127.0.0.1")
    try:
        relay_settings = dataclasses.replace(configured, dns_nameservers=("127.0.0.1",),
                                             dns_port=dns.port)
        config = RelayConfig.from_settings(
            relay_settings, spool_dir=str(spool_dir), smtp_port=sink.port,
            allow_networks="127.0.0.0/8", scan_interval=0.1, hostname="relay.test", warmup=False)
        relay = Relay(relay_settings, config, sink=OutcomeSink(
            functools.partial(record_outcomes, plugins=plugins)))
        asyncio.run(_deliver(relay, RELAYED))
    finally:
        dns.stop()
    counts = sink.handler.per_recipient
    assert sorted(counts) == sorted(f"r{i}@{domain}" for i in range(RELAYED))
    assert max(counts.values()) == 1
    assert _statuses(news.tenant_id) == {"delivered": RELAYED}
    with tenant_tx(news.tenant_id) as database:
        events = dict(database.execute_sql(
            "SELECT type, count(DISTINCT message_id) FROM events WHERE tenant_id = %s "
            "AND campaign_id = %s GROUP BY type", (str(news.tenant_id), campaign_id)).fetchall())
    assert events == {"accepted": RELAYED, "delivered": RELAYED}
    sweeper.tick(configured, plugins)
    assert news.get(f"/v1/campaigns/{campaign_id}").json["status"] == "sent"
    stats = news.get(f"/v1/analytics/campaigns/{campaign_id}")
    assert stats.status_code == 200, stats.text
    assert (stats.json["sent"], stats.json["delivered"]) == (RELAYED, RELAYED)


def test_rows_leased_by_a_dead_worker_are_reclaimed_and_sent_once(cluster_app, sink,  # type: ignore[no-untyped-def]
                                                                  callers) -> None:
    settings, plugins, _, _ = cluster_app
    shop = callers("lease-shop")
    for index in range(5):
        queued = shop.post("/v1/messages", {"to": f"b{index}@shop.example.test",
                                            "transport": "sink", "subject": "Receipt",
                                            "from_email": "orders@shop.example.com",
                                            "text": "Thanks"})
        assert queued.status_code == 202, queued.text
    park_other_tenants_work(shop.tenant_id)
    dead = outbox.claim_batch("dead-worker", limit=10, lease_seconds=300)
    assert len(dead) == 5 and {m.tenant_id for m in dead} == {shop.tenant_id}
    assert outbox.claim_batch("live-worker", limit=10) == []  # the lease holds while valid
    with tenant_tx(shop.tenant_id) as database:
        database.execute_sql(
            "UPDATE messages SET lease_expires_at = now() - interval '1 minute' "
            "WHERE tenant_id = %s AND lease_owner = 'dead-worker'", (str(shop.tenant_id),))

    assert sweeper.reclaim_expired_leases() == 5
    assert _statuses(shop.tenant_id) == {"queued": 5}
    assert run_until_idle(settings, plugins) == 5
    counts = sink.handler.per_recipient
    assert sorted(counts) == [f"b{i}@shop.example.test" for i in range(5)]
    assert max(counts.values()) == 1
    assert _statuses(shop.tenant_id) == {"accepted": 5}


def test_transactional_mail_is_not_starved_by_a_large_campaign(cluster_app, callers) -> None:  # type: ignore[no-untyped-def]
    big, shop = callers("fair-big"), callers("fair-shop")
    park_other_tenants_work(big.tenant_id)
    payload = ('{"subject": "Big", "text": "Hello", "html": "", "from_email": "n@big.test", '
               '"from_name": "B", "data": {}}')
    # NOTE: multi-row VALUES, not INSERT ... SELECT: Citus runs that through COPY,
    # which refuses a table with row-level security.
    rows = ", ".join(["(%s, %s, 'transactional', 'sink', %s::jsonb, now())"] * CAMPAIGN_ROWS)
    params = [value for i in range(CAMPAIGN_ROWS)
              for value in (str(big.tenant_id), f"c{i}@big.example.test", payload)]
    with tenant_tx(big.tenant_id) as database:
        database.execute_sql(
            f"INSERT INTO messages (tenant_id, email, kind, transport, payload, next_attempt_at) "
            f"VALUES {rows}", params)
        due_tenants.mark_due(database, str(big.tenant_id))
    receipt = shop.post("/v1/messages", {"to": "buyer@shop.example.test", "transport": "sink",
                                         "from_email": "orders@shop.example.com",
                                         "subject": "Receipt", "text": "Thanks"})
    assert receipt.status_code == 202, receipt.text

    first = outbox.claim_batch("fair-worker", limit=20)
    by_tenant = {tenant: sum(1 for m in first if m.tenant_id == tenant)
                 for tenant in (big.tenant_id, shop.tenant_id)}
    assert by_tenant == {shop.tenant_id: 1, big.tenant_id: 19}
    assert _statuses(big.tenant_id) == {"sending": 19, "queued": CAMPAIGN_ROWS - 19}
