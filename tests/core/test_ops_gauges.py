"""The cluster-wide gauges: what they collect from PostgreSQL and Redis, and how they are shared."""

from __future__ import annotations

import time
import uuid

import pytest

from swiftmail_core import ops_gauges
from swiftmail_core.db import system_tx, tenant_tx

LIMITS = ops_gauges.GaugeLimits(interval_seconds=60, complaint_tenants=1000,
                                complaint_min_delivered=1000)


def _rollups(tenant_id, delivered: int, complained: int) -> None:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id) as database:
        for metric, value in (("delivered", delivered), ("complained", complained)):
            database.execute_sql(
                "INSERT INTO campaign_rollups (tenant_id, campaign_id, bucket, metric, value) "
                "VALUES (%s, %s, date_trunc('hour', now()), %s, %s)",
                (str(tenant_id), str(uuid.uuid4()), metric, value))


@pytest.fixture
def stream(redis_client, run_id):  # type: ignore[no-untyped-def]
    name = f"{run_id}:ops-gauges:{uuid.uuid4().hex[:8]}"
    yield name
    redis_client.delete(name)


def test_collect_reports_each_figure(runtime, make_tenant, redis_client, stream) -> None:  # type: ignore[no-untyped-def]
    noisy, quiet, small = make_tenant("noisy"), make_tenant("quiet"), make_tenant("small")
    _rollups(noisy.id, 2000, 10)
    _rollups(quiet.id, 5000, 0)
    _rollups(small.id, 100, 50)  # too few deliveries for its rate to be reported
    with tenant_tx(noisy.id) as database:
        ledger_id = database.execute_sql(
            "INSERT INTO messages (tenant_id, email, kind, status, next_attempt_at) "
            "VALUES (%s, 'due@example.com', 'transactional', 'queued', now() - interval '2 hours') "
            "RETURNING id", (str(noisy.id),)).fetchone()[0]
        database.execute_sql(
            "INSERT INTO jobs (tenant_id, kind, status, error, finished_at) "
            "VALUES (%s, 'import_contacts', 'failed', 'bad file', now())", (str(noisy.id),))
    ten_minutes_ago_ms = int(time.time() * 1000) - 600_000
    redis_client.xadd(stream, {"h": "1"}, id=f"{ten_minutes_ago_ms}-0")
    redis_client.xadd(stream, {"h": "2"})
    try:
        snapshot = ops_gauges.collect(redis_client, stream, LIMITS)
    finally:
        with system_tx() as database:  # leave no due row for other tests' workers
            database.execute_sql("/* cross-tenant */ UPDATE messages SET status = 'cancelled' "
                                 "WHERE tenant_id = %s AND id = %s", (str(noisy.id), ledger_id))
    assert snapshot["outbox_oldest_due_age_seconds"] >= 7000
    rates = {row["tenant"]: row["rate"] for row in snapshot["complaint_rates"]}
    assert rates[noisy.slug] == pytest.approx(0.005)
    assert rates[quiet.slug] == 0
    assert small.slug not in rates
    assert list(rates).index(noisy.slug) < list(rates).index(quiet.slug)  # worst first
    assert snapshot["jobs_failed_last_hour"]["import_contacts"] >= 1
    assert snapshot["tracking_backlog_entries"] == 2
    assert 590 <= snapshot["tracking_backlog_oldest_age_seconds"] < 3600
    assert snapshot["replication"]["standbys"] == 0  # the test server streams to no standby
    assert snapshot["webhook_deliveries_abandoned_last_hour"] >= 0


def test_complaint_series_are_capped(runtime, make_tenant, redis_client, stream) -> None:  # type: ignore[no-untyped-def]
    for _ in range(3):
        _rollups(make_tenant("capped").id, 1000, 5)
    capped = ops_gauges.GaugeLimits(complaint_tenants=2, complaint_min_delivered=1000)
    assert len(ops_gauges.collect(redis_client, stream, capped)["complaint_rates"]) == 2


def test_one_process_collects_per_interval_the_others_share_it(
    runtime, redis_client, stream, run_id, monkeypatch
) -> None:  # type: ignore[no-untyped-def]
    prefix = f"{run_id}:ops-share:{uuid.uuid4().hex[:6]}:"
    calls = []
    real = ops_gauges.collect

    def counting(*args):  # type: ignore[no-untyped-def]
        calls.append(1)
        return real(*args)

    monkeypatch.setattr(ops_gauges, "collect", counting)
    try:
        first = ops_gauges.current(redis_client, prefix, stream, LIMITS)
        second = ops_gauges.current(redis_client, prefix, stream, LIMITS)
        assert first is not None and second == first
        assert len(calls) == 1
        # Stale, but another process holds the lock: serve the stored one, collect nothing.
        stale = {**first, "collected_at": first["collected_at"] - 3600}
        redis_client.set(f"{prefix}ops_gauges", __import__("json").dumps(stale))
        redis_client.set(f"{prefix}ops_gauges:lock", "1", ex=60)
        assert ops_gauges.current(redis_client, prefix, stream, LIMITS) == stale
        assert len(calls) == 1
        redis_client.delete(f"{prefix}ops_gauges:lock")
        fresh = ops_gauges.current(redis_client, prefix, stream, LIMITS)
        assert len(calls) == 2 and fresh["collected_at"] > stale["collected_at"]
    finally:
        redis_client.delete(f"{prefix}ops_gauges", f"{prefix}ops_gauges:lock")


def test_the_api_serves_the_gauges_on_metrics(client) -> None:  # type: ignore[no-untyped-def]
    text = client.simulate_get("/metrics").text
    for name in ("swiftmail_outbox_oldest_due_age_seconds", "swiftmail_tracking_backlog_entries",
                 "swiftmail_db_standbys", "swiftmail_ops_collected_timestamp_seconds",
                 "swiftmail_webhook_deliveries_abandoned_last_hour"):
        assert f"\n{name} " in text, name
    assert "swiftmail_http_requests_total" in text
