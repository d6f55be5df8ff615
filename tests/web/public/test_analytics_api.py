"""The /v1/analytics API: roles, 404 across tenants, CSV export."""

from __future__ import annotations

import datetime

from swiftmail_core.events import EventRecord, record_events
from swiftmail_core.public_ids import public_ids
from tests.core.tracking.conftest import make_sent_message


def test_stats_api_and_csv(owner_a, viewer_a, owner_b, tenant_a, settings) -> None:  # type: ignore[no-untyped-def]
    m = make_sent_message(tenant_a.id)
    moment = datetime.datetime(2026, 11, 5, 10, tzinfo=datetime.UTC)
    record_events([EventRecord(tenant_a.id, "delivered", moment, message_id=m.message_id,
                               campaign_id=m.campaign_id, email=m.email, source_key="d1"),
                   EventRecord(tenant_a.id, "opened", moment, message_id=m.message_id,
                               campaign_id=m.campaign_id, source_key="o1")])
    base = f"/v1/analytics/campaigns/{m.campaign_id}"
    stats = viewer_a.get(base)
    assert stats.status_code == 200, stats.text
    assert stats.json["delivered"] == 1
    assert stats.json["opens"]["human"] == {"total": 1, "unique": 1}
    assert viewer_a.get(f"{base}/timeseries", params={"interval": "day"}).json["data"]
    shown = viewer_a.get(f"{base}/links").json["data"][0]["link_id"]
    assert public_ids(settings.secret_key).decode("link", tenant_a.id, shown) == m.link_id
    assert viewer_a.get(f"{base}/domains").json["data"][0]["domain"] == "example.com"
    assert owner_b.get(base).status_code == 404
    assert owner_b.get(f"{base}/export.csv").status_code == 404
    exported = owner_a.get(f"{base}/export.csv")
    assert exported.headers["content-type"].startswith("text/csv")
    assert exported.text.splitlines()[1].startswith("2026-11-05")
    window = {"from": "2026-11-01", "to": "2026-12-01"}
    assert owner_a.get("/v1/analytics/tenant", params=window).json["delivered"] == 1
    assert owner_a.get("/v1/analytics/domains", params=window).json["data"]
    by_domain = owner_a.get("/v1/analytics/export.csv", params={**window, "by": "domain"})
    assert "example.com" in by_domain.text
    bad = owner_a.get("/v1/analytics/tenant", params={"from": "soon", "to": "later"})
    assert bad.status_code == 422
    assert bad.json["errors"][0]["field"] == "from"
    assert owner_a.client.simulate_get(base).status_code == 401
