"""Sending on the Citus cluster: a campaign end to end, through the REST API.

API -> audience resolution (the scheduler tick) -> tenant-by-tenant claims ->
an SMTP sink -> tracking hits (the public pixel and click routes, drained
from Redis) -> events and rollups, read back through the analytics API.
"""

from __future__ import annotations

import uuid
from typing import Any

import falcon.testing

from swiftmail_core import tokens
from swiftmail_core.sending import sweeper
from swiftmail_core.sending.worker import SendingWorker

RECIPIENTS = 30


class Caller:
    """An API client acting for one tenant's owner key."""

    def __init__(self, client: falcon.testing.TestClient, tenant_id: uuid.UUID) -> None:
        from swiftmail_core.apikeys import create_api_key

        self.client = client
        self.tenant_id = tenant_id
        key = create_api_key(tenant_id, role="owner").key
        self.headers = {"Authorization": f"Bearer {key}"}

    def post(self, path: str, body: dict[str, Any] | None = None) -> Any:
        """POST ``body`` as JSON; return the result."""
        return self.client.simulate_post(path, json=body or {}, headers=self.headers)

    def get(self, path: str, **params: Any) -> Any:
        """GET with query parameters; return the result."""
        return self.client.simulate_get(path, params=params, headers=self.headers)


def new_caller(client: falcon.testing.TestClient, slug: str) -> Caller:
    """Create a tenant and return a caller holding its owner key."""
    from swiftmail_core.tenants import create_tenant

    return Caller(client, create_tenant(f"{slug}-{uuid.uuid4().hex[:8]}").id)


def start_campaign(caller: Caller, recipients: int, domain: str, transport: str = "sink") -> str:
    """Create a list of ``recipients`` confirmed addresses and schedule a campaign to it."""
    made = caller.post("/v1/lists", {"name": f"News {domain}"})
    assert made.status_code == 201, made.text
    list_id = made.json["id"]
    for index in range(recipients):
        added = caller.post(f"/v1/lists/{list_id}/subscriptions",
                            {"email": f"r{index}@{domain}"})
        assert added.status_code in (200, 201), added.text
    campaign = caller.post("/v1/campaigns", {
        "name": "Launch", "subject": "Hello {{ contact.email }}",
        "html": '<p>Hi</p><p><a href="https://example.com/landing">Go</a></p>',
        "from_email": "news@sender.example.com", "list_ids": [list_id], "transport": transport})
    assert campaign.status_code == 201, campaign.text
    scheduled = caller.post(f"/v1/campaigns/{campaign.json['id']}/schedule")
    assert scheduled.status_code == 200, scheduled.text
    return str(campaign.json["id"])


def run_until_idle(settings, plugins, rounds: int = 40) -> int:  # type: ignore[no-untyped-def]
    """Tick and drain until nothing is due; return rows claimed."""
    worker = SendingWorker(settings, plugins)
    total = 0
    for _ in range(rounds):
        sweeper.tick(settings, plugins)
        claimed = worker.drain(30)
        total += claimed
        if not claimed and not sweeper.has_due_work():
            sweeper.tick(settings, plugins)
            return total
    raise AssertionError(f"still sending after {rounds} rounds")


def test_a_campaign_runs_end_to_end_on_the_cluster(cluster_app, sink, run_id) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_web.public import create_tracking_app
    from swiftmail_web.public.services import PublicConfig, PublicServices

    from swiftmail_core.tracking_ingest import HitStream
    from swiftmail_core.tracking_ingest.drainer import Drainer

    settings, plugins, client, redis_client = cluster_app
    news, shop = new_caller(client, "e2e-news"), new_caller(client, "e2e-shop")
    campaign_id = start_campaign(news, RECIPIENTS, "news.example.test")
    receipt = shop.post("/v1/messages", {"to": "buyer@shop.example.test", "transport": "sink",
                                         "from_email": "orders@shop.example.com",
                                         "subject": "Receipt", "text": "Thanks"})
    assert receipt.status_code == 202, receipt.text

    assert run_until_idle(settings, plugins) == RECIPIENTS + 1
    counts = sink.handler.per_recipient
    assert sum(counts.values()) == RECIPIENTS + 1 and max(counts.values()) == 1
    assert "buyer@shop.example.test" in counts
    ledger = news.get(f"/v1/campaigns/{campaign_id}/messages", limit=100).json["data"]
    assert sorted({row["status"] for row in ledger}) == ["accepted"]
    assert news.get(f"/v1/campaigns/{campaign_id}").json["status"] == "sent"

    config = PublicConfig(stream=f"{run_id}:citus-hits", redis_prefix=f"citus-{run_id}:",
                          redis_timeout_ms=2000)
    services = PublicServices.build(settings, redis_client, plugins, config)
    services.stream.ensure_group()
    public = falcon.testing.TestClient(create_tracking_app(services))
    try:
        link_id = _link_id(news.tenant_id, campaign_id)
        human = {"User-Agent": "Mozilla/5.0 (Windows NT 10.0) Firefox/120.0"}
        for row in ledger[:5]:
            token = tokens.make_open_token(settings.secret_key, news.tenant_id,
                                           ledger_id(settings, news, row))
            assert public.simulate_get(f"/t/o/{token}.gif", headers=human).status_code == 200
        for row in ledger[:2]:
            token = tokens.make_click_token(settings.secret_key, news.tenant_id, link_id,
                                            ledger_id(settings, news, row))
            assert public.simulate_get(f"/t/c/{token}", headers=human).status_code == 302
        drainer = Drainer(HitStream(redis_client, config.stream), "citus", block_ms=10)
        assert drainer.drain_once() == 7
    finally:
        redis_client.delete(config.stream)

    stats = news.get(f"/v1/analytics/campaigns/{campaign_id}")
    assert stats.status_code == 200, stats.text
    assert stats.json["sent"] == RECIPIENTS
    assert stats.json["opens"]["human"]["unique"] + stats.json["opens"]["machine"]["unique"] == 5
    assert stats.json["clicks"]["human"]["unique"] + stats.json["clicks"]["machine"]["unique"] == 2


def ledger_id(settings, caller: Caller, row: dict[str, Any]) -> int:  # type: ignore[no-untyped-def]
    """Return the ledger row id behind the API's public message id."""
    from swiftmail_core.public_ids import public_ids

    decoded = public_ids(settings.secret_key).decode("message", caller.tenant_id, row["id"])
    assert decoded is not None
    return decoded


def _link_id(tenant_id: uuid.UUID, campaign_id: str) -> int:
    from swiftmail_core.db import tenant_tx

    with tenant_tx(tenant_id) as database:
        return int(database.execute_sql(
            "SELECT id FROM links WHERE tenant_id = %s AND campaign_id = %s",
            (str(tenant_id), campaign_id)).fetchone()[0])
