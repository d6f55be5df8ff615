"""Analytics from rollups: campaign totals, series, links, domains, tenant range."""

from __future__ import annotations

import datetime
import uuid

from swiftmail_core import analytics
from swiftmail_core.analytics.export import domains_csv, series_csv
from swiftmail_core.db import tenant_tx
from swiftmail_core.events import EventRecord, record_events
from tests.core.tracking.conftest import make_sent_message

T0 = datetime.datetime(2026, 11, 2, 9, 30, tzinfo=datetime.UTC)


def _seed(tenant_id):  # type: ignore[no-untyped-def]
    m = make_sent_message(tenant_id)
    second = make_sent_message(tenant_id, campaign_id=m.campaign_id, email="z@yahoo.com")
    later = T0 + datetime.timedelta(hours=26)

    def event(kind: str, message, at=T0, **kw):  # type: ignore[no-untyped-def]
        return EventRecord(tenant_id, kind, at, message_id=message.message_id,
                           campaign_id=m.campaign_id, contact_id=message.contact_id,
                           email=message.email, source_key=str(uuid.uuid4()), **kw)

    record_events([
        event("accepted", m), event("accepted", second),
        event("delivered", m), event("bounced", second, bounce_class="hard"),
        event("opened", m), event("opened", m, at=later), event("opened", m, is_machine=True),
        event("clicked", m, link_id=m.link_id), event("clicked", m, at=later, link_id=m.link_id),
        event("clicked", m, link_id=m.link_id, is_machine=True),
        event("deferred", second), event("complained", m), event("unsubscribed", m),
    ])
    return m


def test_campaign_summary_separates_human_and_machine(tenant_a) -> None:
    m = _seed(tenant_a.id)
    with tenant_tx(tenant_a.id):
        stats = analytics.campaign_summary(m.campaign_id)
    assert (stats["sent"], stats["delivered"], stats["deferred"]) == (2, 1, 1)
    assert stats["bounced"]["total"] == 1 and stats["bounced"]["hard"] == 1
    assert stats["opens"] == {"human": {"total": 2, "unique": 1},
                              "machine": {"total": 1, "unique": 1}}
    assert stats["clicks"]["human"] == {"total": 2, "unique": 1}
    assert stats["complaints"] == 1 and stats["unsubscribes"] == 1
    assert stats["rates"]["unique_open_rate_human"] == 1.0


def test_series_links_domains_and_tenant_range(tenant_a, tenant_b) -> None:
    m = _seed(tenant_a.id)
    with tenant_tx(tenant_a.id):
        hourly = analytics.campaign_timeseries(m.campaign_id, "hour")["data"]
        daily = analytics.campaign_timeseries(m.campaign_id, "day")["data"]
        links = analytics.campaign_links(m.campaign_id)["data"]
        domains = analytics.campaign_domains(m.campaign_id)["data"]
        tenant = analytics.tenant_summary(T0 - datetime.timedelta(days=1),
                                          T0 + datetime.timedelta(days=7))
        outside = analytics.tenant_summary(T0 + datetime.timedelta(days=30),
                                           T0 + datetime.timedelta(days=31))
    assert [item["metrics"].get("opened.human") for item in hourly] == [1, 1]
    assert [item["bucket"].day for item in daily] == [2, 3]
    assert links[0]["url"] == "https://example.com/landing"
    assert links[0]["clicks"]["human"] == {"total": 2, "unique": 1}
    assert links[0]["clicks"]["machine"] == {"total": 1, "unique": 1}
    by_domain = {row["domain"]: row for row in domains}
    assert by_domain["yahoo.com"]["bounced"]["hard"] == 1
    assert by_domain["yahoo.com"]["deferred"] == 1
    assert by_domain["example.com"]["delivered"] == 1
    assert tenant["delivered"] == 1 and tenant["campaigns"] == 1
    assert outside["delivered"] == 0
    assert "opens_human" in series_csv(daily).splitlines()[0]
    assert "yahoo.com" in domains_csv(domains)
    with tenant_tx(tenant_b.id):  # another tenant sees nothing of it
        import pytest

        from swiftmail_core.errors import NotFoundError

        with pytest.raises(NotFoundError):
            analytics.campaign_summary(m.campaign_id)


def test_csv_refuses_formula_injection() -> None:
    text = domains_csv([{"domain": "=HYPERLINK(1)", "delivered": 1, "deferred": 0,
                         "bounced": {"total": 0, "hard": 0, "soft": 0}, "expired": 0}])
    assert "'=HYPERLINK" in text


def test_statistics_read_from_the_configured_analytics_database(settings, targets,
                                                                tenant_a, tenant_b) -> None:  # type: ignore[no-untyped-def]
    import dataclasses

    from swiftmail_core import db
    from swiftmail_core.db import analytics_tx
    from swiftmail_core.db.targets import database_targets
    from swiftmail_core.testing.smtp_sink import free_port

    m = _seed(tenant_a.id)
    where = ("SELECT current_setting('application_name'), "
             "current_setting('transaction_read_only')")

    def use(analytics_url: str | None) -> None:
        configured = dataclasses.replace(settings, analytics_database_url=analytics_url)
        db.disconnect()
        db.connect(database_targets(configured), pool_size=settings.db_pool_size,
                   failover_wait_seconds=settings.db_failover_wait_seconds)

    try:
        # A replica of this very database stands in for a standby here (tests/ha has a
        # real one): the reads go through the analytics handle, read-only, tenant-scoped.
        use(settings.database_url)
        with analytics_tx(tenant_a.id) as database:
            assert database.execute_sql(where).fetchone() == ("swiftmail-analytics", "on")
            assert analytics.campaign_summary(m.campaign_id)["sent"] == 2
        with analytics_tx(tenant_b.id):
            import pytest

            from swiftmail_core.errors import NotFoundError
            with pytest.raises(NotFoundError):
                analytics.campaign_summary(m.campaign_id)
        # Unreachable: read from the primary instead of failing.
        use(f"postgresql://127.0.0.1:{free_port()}/swiftmail")
        with analytics_tx(tenant_a.id) as database:
            assert database.execute_sql(where).fetchone() == ("swiftmail-app", "on")
            assert analytics.campaign_summary(m.campaign_id)["sent"] == 2
        # Unset: the primary.
        use(None)
        with analytics_tx(tenant_a.id) as database:
            assert database.execute_sql(where).fetchone()[0] == "swiftmail-app"
    finally:
        db.disconnect()
        db.connect(targets, pool_size=settings.db_pool_size,
                   failover_wait_seconds=settings.db_failover_wait_seconds)
