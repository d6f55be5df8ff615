"""Claiming: per-tenant rate and daily quota at claim time, leases, suspended tenants."""

from __future__ import annotations

import psycopg2
from psycopg2.extensions import make_dsn, parse_dsn

from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.sending import due_tenants, outbox
from swiftmail_core.sending.sweeper import reclaim_expired_leases
from swiftmail_core.tenants import delete_tenant
from tests.core.lock_waits import RETRIED, race, tenant_delete_statement, wait_until_waiting


def _queue(tenant_id, count: int) -> None:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id) as database:
        database.execute_sql(
            "INSERT INTO messages (tenant_id, email, kind, transport) "
            "SELECT %s, 'r' || i || '@x.test', 'transactional', 'none' FROM generate_series(1, %s) i",
            (str(tenant_id), count))
        due_tenants.mark_due(database, tenant_id)


def _budget(tenant_id, *, rate: int, quota: int, tokens: float, day_count: int) -> None:  # type: ignore[no-untyped-def]
    with system_tx() as database:
        database.execute_sql(
            "UPDATE tenants SET send_rate_per_second = %s, daily_quota = %s WHERE id = %s",
            (rate, quota, str(tenant_id)))
        database.execute_sql(
            "INSERT INTO send_budgets (tenant_id, tokens, refilled_at, day, day_count) "
            "VALUES (%s, %s, now(), current_date, %s) ON CONFLICT (tenant_id) DO UPDATE SET "
            "tokens = EXCLUDED.tokens, refilled_at = now(), day = current_date, "
            "day_count = EXCLUDED.day_count", (str(tenant_id), tokens, day_count))


def _mine(claimed, tenant_id):  # type: ignore[no-untyped-def]
    """Keep this tenant's rows; give other tests' rows straight back."""
    outbox.release([c for c in claimed if c.tenant_id != tenant_id])
    return [c for c in claimed if c.tenant_id == tenant_id]


def test_rate_limits_claims_and_pushes_the_rest_later(tenant_a) -> None:  # type: ignore[no-untyped-def]
    _queue(tenant_a.id, 20)
    _budget(tenant_a.id, rate=3, quota=1000, tokens=3, day_count=0)
    claimed = _mine(outbox.claim_batch(limit=1000), tenant_a.id)
    assert len(claimed) == 3  # the bucket holds one second of the rate
    with tenant_tx(tenant_a.id) as database:
        due_now = database.execute_sql(
            "SELECT count(*) FROM messages WHERE status = 'queued' AND next_attempt_at <= now()"
        ).fetchone()[0]
    assert due_now == 0  # the rest wait for their tokens


def test_daily_quota_stops_at_the_quota_until_tomorrow(tenant_a) -> None:  # type: ignore[no-untyped-def]
    _queue(tenant_a.id, 10)
    _budget(tenant_a.id, rate=1000, quota=25, tokens=1000, day_count=20)
    claimed = _mine(outbox.claim_batch(limit=1000), tenant_a.id)
    assert len(claimed) == 5
    with tenant_tx(tenant_a.id) as database:
        later = database.execute_sql(
            "SELECT count(*) FROM messages WHERE status = 'queued' "
            "AND next_attempt_at >= (current_date + 1)::timestamptz").fetchone()[0]
    assert later == 5


def test_suspended_tenant_claims_nothing(tenant_a) -> None:  # type: ignore[no-untyped-def]
    _queue(tenant_a.id, 3)
    with system_tx() as database:
        database.execute_sql("UPDATE tenants SET status = 'suspended' WHERE id = %s",
                             (str(tenant_a.id),))
    assert _mine(outbox.claim_batch(limit=1000), tenant_a.id) == []


def test_expired_lease_is_reclaimed_and_late_answer_of_old_owner_is_ignored(tenant_a) -> None:  # type: ignore[no-untyped-def]
    _queue(tenant_a.id, 1)
    first = _mine(outbox.claim_batch("old", limit=1000, lease_seconds=0), tenant_a.id)
    assert len(first) == 1
    assert reclaim_expired_leases() >= 1
    second = _mine(outbox.claim_batch("new", limit=1000, lease_seconds=300), tenant_a.id)
    assert len(second) == 1 and second[0].attempts == 2
    late = outbox.record_results(first, [outbox.SendResult(first[0].ledger_id,
                                                           outbox.Outcome.REJECTED, reason="x")])
    with tenant_tx(tenant_a.id) as database:
        status, owner = database.execute_sql(
            "SELECT status, lease_owner FROM messages WHERE id = %s", (first[0].ledger_id,)
        ).fetchone()
    # record_results counts what it applied: the old owner's late answer applied nothing
    assert late == {} and (status, owner) == ("sending", "new")


def test_a_claim_run_again_gets_the_batch_it_already_holds(tenant_a) -> None:  # type: ignore[no-untyped-def]
    """A claim retried after a failover lost its answer (but not its COMMIT) takes no second batch."""
    import uuid

    _queue(tenant_a.id, 4)
    _budget(tenant_a.id, rate=100, quota=1000, tokens=100, day_count=0)
    owner = f"retry-{uuid.uuid4().hex[:8]}"
    first = outbox.claim_batch(owner, limit=1000)
    try:
        again = outbox.claim_batch(owner, limit=1000)
        assert sorted(c.ledger_id for c in again) == sorted(c.ledger_id for c in first)
        assert {c.attempts for c in again} == {c.attempts for c in first}
        assert len([c for c in first if c.tenant_id == tenant_a.id]) == 4
    finally:
        outbox.release(first)


def _counts(claimed) -> dict:  # type: ignore[no-untyped-def, type-arg]
    counts: dict = {}  # type: ignore[type-arg]
    for message in claimed:
        counts[message.tenant_id] = counts.get(message.tenant_id, 0) + 1
    return counts


def test_a_big_campaign_does_not_starve_another_tenants_mail(tenant_a, tenant_b) -> None:  # type: ignore[no-untyped-def]
    from tests.core.sending.conftest import park_other_tenants_work

    park_other_tenants_work(tenant_a.id)
    _queue(tenant_a.id, 500)  # due first: the old global claim took these 20 first
    _queue(tenant_b.id, 3)
    claimed = outbox.claim_batch(limit=20)
    assert _counts(claimed) == {tenant_a.id: 17, tenant_b.id: 3}
    outbox.release(claimed)


def test_tenants_take_turns_when_the_batch_is_smaller_than_them(make_tenant) -> None:  # type: ignore[no-untyped-def]
    from tests.core.sending.conftest import park_other_tenants_work

    tenants = [make_tenant("rr") for _ in range(5)]
    park_other_tenants_work(tenants[0].id)
    for tenant in tenants:
        _queue(tenant.id, 4)
    served = []
    for _ in range(3):  # 5 tenants, 2 rows a claim: everyone within 3 claims
        claimed = outbox.claim_batch(limit=2)
        assert len(claimed) == 2 and len(_counts(claimed)) == 2  # one row each
        served.extend(message.tenant_id for message in claimed)
    assert {tenant.id for tenant in tenants} <= set(served)


def test_a_tenant_out_of_work_or_budget_leaves_the_due_tenants(tenant_a, tenant_b) -> None:  # type: ignore[no-untyped-def]
    _queue(tenant_a.id, 2)
    _queue(tenant_b.id, 10)
    _budget(tenant_b.id, rate=3, quota=1000, tokens=3, day_count=0)
    claimed = outbox.claim_batch(limit=1000)
    with system_tx() as database:
        hints = dict(database.execute_sql(
            "SELECT tenant_id, due_at > now() FROM due_tenants WHERE queue = 'outbox' AND tenant_id IN (%s, %s)",
            (str(tenant_a.id), str(tenant_b.id))).fetchall())
    outbox.release(claimed)
    assert hints == {tenant_b.id: True}  # a: nothing left; b: back when tokens refill


def test_a_claim_and_the_due_work_check_survive_a_moving_shard(tenant_a, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    """Citus fails a read of every shard while a tenant's shards move; the sender retries.

    Regression: the cross-tenant reads of a claim round (the due tenants) and
    ``has_due_work`` were not retried, and a shard move killed the sender
    ("could not find valid entry for shard"). Simulated by failing each one once.
    """
    import uuid

    from swiftmail_core.sending import sweeper

    _queue(tenant_a.id, 2)
    _budget(tenant_a.id, rate=100, quota=1000, tokens=100, day_count=0)
    moving = "DO $$ BEGIN RAISE EXCEPTION 'could not find valid entry for shard 102040' " \
             "USING ERRCODE = 'internal_error'; END $$"
    real_due_now = due_tenants.OUTBOX.due_now
    failed: list[str] = []

    def due_now() -> list[str]:
        if "due_now" not in failed:
            failed.append("due_now")
            with system_tx() as database:
                database.execute_sql(moving)
        return real_due_now()

    monkeypatch.setattr(due_tenants.OUTBOX, "due_now", due_now)
    claimed = outbox.claim_batch(f"move-{uuid.uuid4().hex[:8]}", limit=1000)
    try:
        assert failed == ["due_now"]
        assert len(_mine(claimed, tenant_a.id)) == 2
    finally:
        outbox.release(claimed)

    real_system_tx = sweeper.system_tx

    def system_tx_failing_once():  # type: ignore[no-untyped-def]
        context = real_system_tx()
        if "has_due_work" not in failed:
            failed.append("has_due_work")
            with context as database:
                database.execute_sql(moving)
        return context

    monkeypatch.setattr(sweeper, "system_tx", system_tx_failing_once)
    assert sweeper.has_due_work() is True
    assert failed == ["due_now", "has_due_work"]


def test_deleting_a_tenant_during_its_first_claim_does_not_deadlock(
        tenant_a, targets, pg_admin_url, caplog) -> None:  # type: ignore[no-untyped-def]
    # Regression: a tenant's first claim locked its ledger rows and then inserted
    # its send_budgets row, whose foreign key locked the tenant FOR KEY SHARE;
    # the tenant's DELETE locked the tenant and then, cascading, the ledger rows
    # (40P01). The budget row now comes with the tenant.
    tenant = str(tenant_a.id)
    _queue(tenant_a.id, 1)
    # A superuser session holds the tenant's budget row (without a foreign-key
    # lock on the tenant), so the claim waits there with its ledger row locked.
    params = parse_dsn(pg_admin_url)
    params["dbname"] = targets.database
    blocker = psycopg2.connect(make_dsn(**params))
    try:
        with blocker.cursor() as cursor:
            cursor.execute("SET session_replication_role = replica")
            cursor.execute("INSERT INTO send_budgets (tenant_id, tokens) VALUES (%s, 0) "
                           "ON CONFLICT (tenant_id) DO UPDATE SET tokens = send_budgets.tokens",
                           (tenant,))
        claiming, deleting = race(
            lambda: outbox._claim_tenant(tenant, "w-first", 10, 60), lambda: delete_tenant(tenant),
            holds=lambda: wait_until_waiting(targets.dsn("system"),
                                             f"SELECT * FROM swiftmail_claim_tenant('{tenant}'"),
            waits=lambda: wait_until_waiting(targets.dsn("system"), tenant_delete_statement(tenant)),
            release=blocker.rollback)
    finally:
        blocker.close()
    assert (claiming, deleting) == ([], [])
    with system_tx() as database:
        assert database.execute_sql("SELECT count(*) FROM messages WHERE tenant_id = %s",
                                    (tenant,)).fetchone()[0] == 0
    assert RETRIED not in caplog.text  # the lock order, not the delete's retry
