"""A/B tests in the ledger: the random split, the decision, and decisions racing."""

from __future__ import annotations

import threading
import uuid
from collections import Counter
from typing import Any

import pytest

from swiftmail_core.ab_tests import decision, stats, variants
from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.errors import ConflictError
from swiftmail_core.events import EventRecord, store_events
from swiftmail_core.models import utcnow
from swiftmail_core.sending import lifecycle, sweeper
from swiftmail_core.sending.audience import resolve_audience
from tests.core.sending.conftest import (
    add_subscribers,
    cancel_leftover_work,
    make_campaign,
    make_list,
)

SUBJECTS = [{"subject": "Subject A"}, {"subject": "Subject B"}, {"subject": "Subject C"}]



@pytest.fixture(autouse=True)
def _leave_no_due_rows(tenant_a):  # type: ignore[no-untyped-def]
    """Cancel what a test left unsent (claims are cross-tenant: other tests would meet it)."""
    yield
    cancel_leftover_work(tenant_a.id)


def ab_campaign(tenant_id: uuid.UUID, contacts: int, *, percent: int = 50, metric: str = "opens",
                decide_after: int = 3600, count: int = 2, **fields: Any) -> uuid.UUID:
    """Create a draft campaign to ``contacts`` new subscribers with an A/B test."""
    list_id = make_list(tenant_id)
    add_subscribers(tenant_id, list_id, contacts, domain=f"{uuid.uuid4().hex[:8]}.test")
    campaign_id = make_campaign(tenant_id, [list_id], **fields)
    variants.set_ab_test(tenant_id, campaign_id,
                         variants.AbSettings(percent, metric, decide_after), SUBJECTS[:count])
    return campaign_id


def ledger(tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> Counter[tuple[str, str | None]]:
    """Return {(status, variant): rows} of a campaign."""
    with tenant_tx(tenant_id) as database:
        rows = database.execute_sql(
            "SELECT status, variant, count(*) FROM messages WHERE campaign_id = %s "
            "GROUP BY status, variant", (str(campaign_id),)).fetchall()
    return Counter({(status, variant): int(n) for status, variant, n in rows})


def start(tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> None:
    """Move the campaign to sending and write its ledger (as the tick does)."""
    lifecycle.schedule_campaign(tenant_id, campaign_id)
    with system_tx() as database:
        database.execute_sql("UPDATE campaigns SET status = 'sending', started_at = now() "
                             "WHERE tenant_id = %s AND id = %s",
                             (str(tenant_id), str(campaign_id)))


def backdate(tenant_id: uuid.UUID, campaign_id: uuid.UUID, seconds: int = 7200) -> None:
    """Pretend the test started ``seconds`` ago."""
    with tenant_tx(tenant_id) as database:
        database.execute_sql(
            "UPDATE campaigns SET audience_resolved_at = now() - make_interval(secs => %s) "
            "WHERE id = %s", (seconds, str(campaign_id)))


def winner(tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> tuple[str | None, str | None]:
    """Return (ab_winner, ab_decided_by)."""
    with tenant_tx(tenant_id) as database:
        return database.execute_sql("SELECT ab_winner, ab_decided_by FROM campaigns "
                                    "WHERE id = %s", (str(campaign_id),)).fetchone()


def test_the_test_share_is_split_evenly_at_random_and_the_rest_waits(tenant_a) -> None:
    campaign_id = ab_campaign(tenant_a.id, 1000, percent=20, count=3)
    start(tenant_a.id, campaign_id)
    assert resolve_audience(tenant_a.id, campaign_id, batch_size=100, parallel=2) == 1000
    rows = ledger(tenant_a.id, campaign_id)
    # Ten ranges of about 100: 20% of each (rounded up or down at random) go to the
    # test, dealt round robin from a random first variant.
    tested = sum(n for (status, _), n in rows.items() if status == "queued")
    assert 195 <= tested <= 205
    per_variant = {variant: n for (status, variant), n in rows.items() if status == "queued"}
    assert set(per_variant) == {"A", "B", "C"}
    assert all(58 <= n <= 72 for n in per_variant.values()), per_variant
    assert rows[("waiting", None)] == 1000 - tested
    with tenant_tx(tenant_a.id) as database:
        positions = [int(p) for (p,) in database.execute_sql(
            "SELECT p FROM (SELECT status, row_number() OVER (ORDER BY contact_id) AS p "
            "FROM messages WHERE campaign_id = %s) x WHERE status = 'queued'",
            (str(campaign_id),))]
    # Drawn from every range, at random within it (not its first ids).
    assert len({(p - 1) // 100 for p in positions}) == 10
    assert sum(1 for p in positions if (p - 1) % 100 < 20) < 0.5 * len(positions)


def test_a_range_rounds_its_share_at_random(tenant_a) -> None:
    campaign_id = ab_campaign(tenant_a.id, 50, percent=25)
    start(tenant_a.id, campaign_id)
    resolve_audience(tenant_a.id, campaign_id)
    rows = ledger(tenant_a.id, campaign_id)
    tested = rows[("queued", "A")] + rows[("queued", "B")]
    assert tested in (12, 13) and abs(rows[("queued", "A")] - rows[("queued", "B")]) <= 1
    assert rows[("waiting", None)] == 50 - tested


def _store(tenant_id: uuid.UUID, campaign_id: uuid.UUID, rows: list[tuple[int, str | None]],
           kind: str, machine: bool) -> None:
    with system_tx() as database:
        store_events(database, [EventRecord(
            tenant_id=tenant_id, type=kind, occurred_at=utcnow(), message_id=ledger_id,
            campaign_id=campaign_id, is_machine=machine,
            source_key=f"test:{kind}:{machine}:{ledger_id}") for ledger_id, _ in rows])


def _test_rows(tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> list[tuple[int, str | None]]:
    with tenant_tx(tenant_id) as database:
        return [(int(i), v) for i, v in database.execute_sql(
            "SELECT id, variant FROM messages WHERE campaign_id = %s AND variant IS NOT NULL "
            "ORDER BY id", (str(campaign_id),))]


def test_the_tick_picks_the_winner_by_human_opens_after_decide_after(
        tenant_a, settings, plugin_manager) -> None:
    campaign_id = ab_campaign(tenant_a.id, 40)
    lifecycle.schedule_campaign(tenant_a.id, campaign_id)
    sweeper.tick(settings, plugin_manager)  # starts it and writes the ledger
    backdate(tenant_a.id, campaign_id)
    sweeper.tick(settings, plugin_manager)
    assert winner(tenant_a.id, campaign_id) == (None, None)  # the test has not gone out yet
    with tenant_tx(tenant_a.id) as database:  # as if the test messages were delivered
        database.execute_sql("UPDATE messages SET status = 'delivered' WHERE campaign_id = %s "
                             "AND status = 'queued'", (str(campaign_id),))
        database.execute_sql("UPDATE campaigns SET audience_resolved_at = now() WHERE id = %s",
                             (str(campaign_id),))
    test_rows = _test_rows(tenant_a.id, campaign_id)
    a_rows = [r for r in test_rows if r[1] == "A"]
    b_rows = [r for r in test_rows if r[1] == "B"]
    _store(tenant_a.id, campaign_id, a_rows, "opened", machine=True)  # privacy proxies: all of A
    _store(tenant_a.id, campaign_id, a_rows[:1], "opened", machine=False)
    _store(tenant_a.id, campaign_id, b_rows[:3], "opened", machine=False)
    sweeper.tick(settings, plugin_manager)
    assert winner(tenant_a.id, campaign_id) == (None, None)  # decide_after has not passed
    backdate(tenant_a.id, campaign_id)
    sweeper.tick(settings, plugin_manager)
    assert winner(tenant_a.id, campaign_id) == ("B", "opens")
    rows = ledger(tenant_a.id, campaign_id)
    assert rows[("waiting", None)] == 0
    assert rows[("queued", "B")] == 20 and rows[("queued", "A")] == 0
    with tenant_tx(tenant_a.id) as database:
        counts = stats.variant_counts(database, tenant_a.id, campaign_id)
        status = database.execute_sql("SELECT status FROM campaigns WHERE id = %s",
                                      (str(campaign_id),)).fetchone()[0]
    assert (counts["A"]["opens"], counts["B"]["opens"]) == (1, 3)
    assert counts["B"]["recipients"] == len(b_rows) + 20
    assert status == "sending"
    sweeper.tick(settings, plugin_manager)
    assert winner(tenant_a.id, campaign_id) == ("B", "opens")  # decided once


def test_wilson_interval() -> None:
    assert stats.wilson_interval(0, 0) is None
    low, high = stats.wilson_interval(10, 100)
    assert round(low, 4) == 0.0552 and round(high, 4) == 0.1744
    low, high = stats.wilson_interval(0, 10)
    assert low == 0.0 and round(high, 4) == 0.2775
    low, high = stats.wilson_interval(10, 10)
    assert round(low, 4) == 0.7225 and high == 1.0


def test_a_waiting_campaign_is_not_finished_and_a_cancel_ends_its_waiting_rows(
        tenant_a, settings, plugin_manager) -> None:
    campaign_id = ab_campaign(tenant_a.id, 10, metric="manual")
    lifecycle.schedule_campaign(tenant_a.id, campaign_id)
    sweeper.tick(settings, plugin_manager)
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql("UPDATE messages SET status = 'delivered' WHERE campaign_id = %s "
                             "AND status = 'queued'", (str(campaign_id),))
    backdate(tenant_a.id, campaign_id, 10 ** 6)
    sweeper.tick(settings, plugin_manager)
    assert (tenant_a.id, campaign_id) not in sweeper.complete_campaigns()
    assert winner(tenant_a.id, campaign_id) == (None, None)  # manual: waits for a person
    lifecycle.cancel_campaign(tenant_a.id, campaign_id)
    rows = ledger(tenant_a.id, campaign_id)
    assert rows[("waiting", None)] == 0 and rows[("cancelled", None)] >= 4
    with pytest.raises(ConflictError):
        decision.choose_winner(tenant_a.id, campaign_id, "A")


def _race(workers: list[Any]) -> list[Any]:
    """Run the callables at once (a barrier); return each result or exception."""
    barrier = threading.Barrier(len(workers))
    results: list[Any] = [None] * len(workers)

    def run(index: int) -> None:
        barrier.wait(timeout=30)
        try:
            results[index] = workers[index]()
        except Exception as ex:  # NOTE: the race's losers are the point
            results[index] = ex

    threads = [threading.Thread(target=run, args=(i,)) for i in range(len(workers))]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    return results


@pytest.mark.parametrize("round_", range(3))
def test_racing_decisions_pick_exactly_one_winner(tenant_a, round_: int) -> None:
    campaign_id = ab_campaign(tenant_a.id, 60, count=3)
    start(tenant_a.id, campaign_id)
    resolve_audience(tenant_a.id, campaign_id)
    backdate(tenant_a.id, campaign_id)
    with tenant_tx(tenant_a.id) as database:  # the test went out: the tick may decide too
        database.execute_sql("UPDATE messages SET status = 'delivered' WHERE campaign_id = %s "
                             "AND status = 'queued'", (str(campaign_id),))
    before = ledger(tenant_a.id, campaign_id)

    def conditional(key: str) -> Any:
        def run() -> Any:
            with system_tx() as database:
                return decision.decide(database, tenant_a.id, campaign_id, key, "manual")
        return run

    def by_hand(key: str) -> Any:
        return lambda: decision.choose_winner(tenant_a.id, campaign_id, key)

    def tick() -> Any:
        return [d for d in decision.decide_due_tests() if d[1] == campaign_id]

    racers = [conditional("A"), conditional("B"), conditional("C"), by_hand("A"),
              by_hand("C"), tick, tick, conditional("B")]
    results = _race(racers)
    won = [r for r in results if isinstance(r, int) or (isinstance(r, list) and r)]
    assert len(won) == 1, results
    losers = [r for r in results if r not in won]
    assert all(r is None or r == [] or isinstance(r, ConflictError) for r in losers), results
    chosen, _ = winner(tenant_a.id, campaign_id)
    after = ledger(tenant_a.id, campaign_id)
    assert after[("waiting", None)] == 0
    waiting_before = before[("waiting", None)]
    # The test rows kept their variants; every waiting row got the winner, once.
    for key in "ABC":
        assert after[("delivered", key)] == before[("delivered", key)]
        assert after[("queued", key)] == (waiting_before if key == chosen else 0), (
            key, chosen, before, after)


def test_the_rest_is_released_in_batches_that_heed_pause_and_cancel(tenant_a) -> None:
    campaign_id = ab_campaign(tenant_a.id, 100, percent=20)
    start(tenant_a.id, campaign_id)
    resolve_audience(tenant_a.id, campaign_id)
    before = ledger(tenant_a.id, campaign_id)
    waiting = before[("waiting", None)]
    with system_tx() as database:
        assert decision.decide(database, tenant_a.id, campaign_id, "B", "manual", limit=10) == 10
    assert decision.release_batch(tenant_a.id, campaign_id, 10) == 10
    lifecycle.pause_campaign(tenant_a.id, campaign_id)
    assert decision.release_batch(tenant_a.id, campaign_id, 10) == 10
    rows = ledger(tenant_a.id, campaign_id)
    assert rows[("held", "B")] == before[("queued", "B")] + 30  # paused: all of it held
    lifecycle.resume_campaign(tenant_a.id, campaign_id)
    assert decision.release_decided(batch_size=25) >= waiting - 30
    rows = ledger(tenant_a.id, campaign_id)
    assert rows[("waiting", None)] == 0
    assert rows[("queued", "B")] == before[("queued", "B")] + waiting
    assert rows[("queued", "A")] == before[("queued", "A")]
    # Cancelled between batches: the cancel ends the rest, no batch queues them.
    other = ab_campaign(tenant_a.id, 50, percent=20)
    start(tenant_a.id, other)
    resolve_audience(tenant_a.id, other)
    with system_tx() as database:
        decision.decide(database, tenant_a.id, other, "A", "manual", limit=5)
    lifecycle.cancel_campaign(tenant_a.id, other)
    assert decision.release_batch(tenant_a.id, other, 10) == 0
    assert {status for status, _ in ledger(tenant_a.id, other)} == {"cancelled"}


def test_a_winner_by_hand_queues_the_rest_and_marks_the_tenant_due(tenant_a) -> None:
    campaign_id = ab_campaign(tenant_a.id, 30, metric="manual")
    start(tenant_a.id, campaign_id)
    resolve_audience(tenant_a.id, campaign_id)
    waiting = ledger(tenant_a.id, campaign_id)[("waiting", None)]
    with system_tx() as database:
        database.execute_sql("DELETE FROM due_tenants WHERE tenant_id = %s", (str(tenant_a.id),))
    assert decision.choose_winner(tenant_a.id, campaign_id, "A") == waiting
    assert ledger(tenant_a.id, campaign_id)[("waiting", None)] == 0
    with system_tx() as database:
        assert database.execute_sql("SELECT count(*) FROM due_tenants WHERE queue = 'outbox' AND tenant_id = %s",
                                    (str(tenant_a.id),)).fetchone()[0] == 1


def test_a_release_moves_exactly_the_rows_it_asked_for_whatever_the_plan(tenant_a) -> None:
    # Regression: the release was "UPDATE ... WHERE id IN (SELECT ... LIMIT n FOR UPDATE
    # SKIP LOCKED)". PostgreSQL may plan that subquery as the inner side of a semi join and
    # run it again for each outer row; each run skips the rows this statement has already
    # updated and locks n more, so it released every waiting row instead of n. These
    # settings make the planner take that plan (it may take it by itself on any table).
    campaign_id = ab_campaign(tenant_a.id, 60, percent=20)
    start(tenant_a.id, campaign_id)
    resolve_audience(tenant_a.id, campaign_id)
    before = ledger(tenant_a.id, campaign_id)
    assert before[("waiting", None)] > 10
    with system_tx() as database:
        database.execute_sql(
            "SET LOCAL enable_hashjoin = off; SET LOCAL enable_mergejoin = off; "
            "SET LOCAL enable_material = off; SET LOCAL enable_hashagg = off; "
            "SET LOCAL enable_sort = off")
        assert decision.decide(database, tenant_a.id, campaign_id, "B", "manual", limit=3) == 3
    rows = ledger(tenant_a.id, campaign_id)
    assert rows[("queued", "B")] == before[("queued", "B")] + 3
    assert rows[("waiting", None)] == before[("waiting", None)] - 3
