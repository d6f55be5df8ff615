"""The one message state writer: transitions, out-of-order reports, exactly-once events."""

from __future__ import annotations

import datetime
import threading
import uuid

import pytest
from swiftmail_relay.outcomes import Outcome as RelayOutcome
from swiftmail_relay.outcomes import record_outcomes

from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.sending import outbox, state
from swiftmail_core.sending.provider_events import ProviderEvent, apply_provider_events
from swiftmail_core.sending.state import Report, apply_reports
from swiftmail_core.transports import Outcome, SendResult
from tests.core.lock_waits import RETRIED, race_tenant_delete


def _row(tenant_id, email: str = "r@x.test", status: str = "queued") -> tuple[int, uuid.UUID]:  # type: ignore[no-untyped-def]
    campaign_id = uuid.uuid4()
    with tenant_tx(tenant_id) as database:
        database.execute_sql("INSERT INTO campaigns (tenant_id, id, name, status) "
                             "VALUES (%s, %s, 'c', 'sending')", (str(tenant_id), str(campaign_id)))
        ledger_id = database.execute_sql(
            "INSERT INTO messages (tenant_id, campaign_id, email, kind, transport, status, "
            "lease_owner) VALUES (%s, %s, %s, 'campaign', 'relay', %s, "
            "CASE WHEN %s = 'sending' THEN 'w1' END) RETURNING id",
            (str(tenant_id), str(campaign_id), email, status, status)).fetchone()[0]
    return int(ledger_id), campaign_id


def _claimed(tenant_id, ledger_id: int, attempts: int = 1) -> outbox.ClaimedMessage:  # type: ignore[no-untyped-def]
    return outbox.ClaimedMessage(ledger_id=ledger_id, tenant_id=tenant_id, campaign_id=None,
                                 contact_id=None, email="r@x.test", kind="campaign",
                                 transport="relay", attempts=attempts, payload={},
                                 lease_owner="w1")


def _ledger(tenant_id, ledger_id: int) -> dict:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id) as database:
        status, provider, message_id = database.execute_sql(
            "SELECT status, provider_message_id, message_id FROM messages WHERE id = %s",
            (ledger_id,)).fetchone()
        events = [row[0] for row in database.execute_sql(
            "SELECT type FROM events WHERE message_id = %s ORDER BY id", (ledger_id,))]
    return {"status": status, "provider": provider, "message_id": message_id, "events": events}


def _relay(tenant_id, ledger_id: int, kind: str, key: str, **extra) -> RelayOutcome:  # type: ignore[no-untyped-def]
    return RelayOutcome(tenant_id=tenant_id, type=kind, email="r@x.test", ledger_id=ledger_id,
                        source_key=key, **extra)


def test_delivered_before_accepted_keeps_the_accepted_event_and_ids(tenant_a) -> None:  # type: ignore[no-untyped-def]
    # Regression: the relay reported delivered first; the worker's accepted update was
    # then skipped and the accepted event and the message ids were lost.
    ledger_id, _ = _row(tenant_a.id, status="sending")
    record_outcomes([_relay(tenant_a.id, ledger_id, "delivered", "relay:q1:delivered")])
    outbox.record_results([_claimed(tenant_a.id, ledger_id)],
                          [SendResult(ledger_id, Outcome.ACCEPTED, provider_message_id="q1")],
                          message_ids={ledger_id: "<m1@x.test>"})
    seen = _ledger(tenant_a.id, ledger_id)
    assert seen["status"] == "delivered"
    assert (seen["provider"], seen["message_id"]) == ("q1", "<m1@x.test>")
    assert sorted(seen["events"]) == ["accepted", "delivered"]


def test_a_late_deferral_never_overwrites_delivered(tenant_a) -> None:  # type: ignore[no-untyped-def]
    ledger_id, _ = _row(tenant_a.id, status="accepted")
    record_outcomes([_relay(tenant_a.id, ledger_id, "delivered", "relay:q2:delivered")])
    record_outcomes([_relay(tenant_a.id, ledger_id, "deferred", "relay:q2:deferred:1")])
    assert _ledger(tenant_a.id, ledger_id)["status"] == "delivered"


def test_a_bounce_after_delivery_is_an_event_and_a_suppression_not_an_undelivery(tenant_a) -> None:  # type: ignore[no-untyped-def]
    # Regression: a DSN after delivery turned the row into "bounced".
    ledger_id, _ = _row(tenant_a.id, status="accepted")
    record_outcomes([_relay(tenant_a.id, ledger_id, "delivered", "relay:q3:delivered")])
    record_outcomes([_relay(tenant_a.id, ledger_id, "bounced", "report:abc:r@x.test:bounced",
                            bounce_class="hard", reply="550 5.1.1 gone")])
    seen = _ledger(tenant_a.id, ledger_id)
    assert seen["status"] == "delivered"
    assert seen["events"] == ["delivered", "bounced"]
    with tenant_tx(tenant_a.id) as database:
        assert database.execute_sql("SELECT reason FROM suppressions WHERE email_lower = "
                                    "'r@x.test'").fetchone()[0] == "hard_bounce"


def test_the_same_report_arriving_twice_counts_once_and_rollups_match_a_recount(tenant_a) -> None:  # type: ignore[no-untyped-def]
    # Regression: a DSN's event was keyed with its arrival time, so a second delivery
    # of the same report stored (and counted) a second bounce.
    ledger_id, campaign_id = _row(tenant_a.id, status="accepted")
    first = datetime.datetime(2026, 12, 5, 10, 0, tzinfo=datetime.UTC)
    for arrived in (first, first + datetime.timedelta(minutes=7)):
        record_outcomes([_relay(tenant_a.id, ledger_id, "bounced", "report:dsn1:r@x.test:bounced",
                                bounce_class="soft", occurred_at=arrived)])
    assert _ledger(tenant_a.id, ledger_id)["events"] == ["bounced"]
    with tenant_tx(tenant_a.id) as database:
        rolled = database.execute_sql(
            "SELECT coalesce(sum(value), 0) FROM campaign_rollups WHERE campaign_id = %s "
            "AND dimension = '' AND metric LIKE 'bounced%%'", (str(campaign_id),)).fetchone()[0]
        counted = database.execute_sql(
            "SELECT count(*) FROM events WHERE campaign_id = %s AND type = 'bounced'",
            (str(campaign_id),)).fetchone()[0]
    assert rolled == counted == 1


def test_provider_events_count_only_for_the_row_and_address_they_name(tenant_a, tenant_b) -> None:  # type: ignore[no-untyped-def]
    ledger_id, _ = _row(tenant_a.id, status="accepted")
    stored = apply_provider_events([
        ProviderEvent(tenant_b.id, ledger_id, "delivered", "r@x.test", "p:1:delivered"),
        ProviderEvent(tenant_a.id, ledger_id, "delivered", "other@x.test", "p:2:delivered"),
        ProviderEvent(tenant_a.id, ledger_id, "delivered", "R@x.test", "p:3:delivered"),
        ProviderEvent(tenant_a.id, ledger_id, "delivered", "R@x.test", "p:3:delivered"),
    ])
    assert stored == 1 and _ledger(tenant_a.id, ledger_id)["status"] == "delivered"


def test_rows_events_and_suppressions_commit_together(tenant_a, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Regression: the worker wrote the row, the suppressions and the events in three
    # transactions; a failure in between left a bounced row without its event.
    ledger_id, _ = _row(tenant_a.id, status="sending")

    def broken(*args, **kwargs):  # type: ignore[no-untyped-def]
        raise RuntimeError("events are down")

    monkeypatch.setattr(state, "store_events", broken)
    with pytest.raises(RuntimeError):
        outbox.record_results([_claimed(tenant_a.id, ledger_id)],
                              [SendResult(ledger_id, Outcome.REJECTED, reason="550 no")])
    assert _ledger(tenant_a.id, ledger_id)["status"] == "sending"
    with system_tx() as database:
        assert database.execute_sql("SELECT count(*) FROM suppressions WHERE tenant_id = %s",
                                    (str(tenant_a.id),)).fetchone()[0] == 0


def test_an_unknown_outcome_is_not_claimed_again_and_provider_events_settle_it(tenant_a) -> None:  # type: ignore[no-untyped-def]
    ledger_id, _ = _row(tenant_a.id, status="sending")
    outbox.record_results([_claimed(tenant_a.id, ledger_id)],
                          [SendResult(ledger_id, Outcome.UNKNOWN, reason="read timeout")])
    assert _ledger(tenant_a.id, ledger_id)["status"] == "unknown"
    claimed = outbox.claim_batch(limit=1000)
    outbox.release([c for c in claimed if c.ledger_id != ledger_id])
    assert ledger_id not in [c.ledger_id for c in claimed]
    apply_provider_events([ProviderEvent(tenant_a.id, ledger_id, "delivered", "r@x.test",
                                         "p:u:delivered")])
    assert _ledger(tenant_a.id, ledger_id)["status"] == "delivered"


@pytest.mark.parametrize(("current", "report", "expected"), [
    ("accepted", "delivered", "delivered"),
    ("delivered", "deferred", "delivered"),
    ("delivered", "bounced", "delivered"),
    ("delivered", "complained", "complained"),
    ("bounced", "delivered", "bounced"),
    ("accepted", "expired", "expired"),
    ("delivered", "expired", "delivered"),
    ("cancelled", "delivered", "cancelled"),
    ("unknown", "bounced", "bounced"),
])
def test_transition_table(current: str, report: str, expected: str) -> None:
    sample = Report(tenant_id=uuid.uuid4(), type=report, source_key="k")
    assert (state.next_status(current, sample, lease_holds=False) or current) == expected


def test_reports_without_a_ledger_row_record_the_event(tenant_a) -> None:  # type: ignore[no-untyped-def]
    applied = apply_reports([Report(tenant_id=tenant_a.id, type="complained", email="c@x.test",
                                    source_key="arf:1:c@x.test")])
    assert [event.type for event in applied.events] == ["complained"]


def test_an_unknown_outcome_with_no_provider_event_ends_expired_after_the_limit(tenant_a) -> None:  # type: ignore[no-untyped-def]
    # Regression: an `unknown` row had no time limit; without a provider event it stayed
    # unknown for ever and its campaign's figures never settled.
    from swiftmail_core.sending.sweeper import expire_unknown_outcomes

    old_id, _ = _row(tenant_a.id, email="old@x.test", status="unknown")
    fresh_id, _ = _row(tenant_a.id, email="fresh@x.test", status="unknown")
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql("UPDATE messages SET updated_at = now() - interval '73 hours' "
                             "WHERE id = %s", (old_id,))
    expire_unknown_outcomes(72)
    expire_unknown_outcomes(72)  # a second sweeper (or a replay) records nothing more
    assert _ledger(tenant_a.id, old_id)["status"] == "expired"
    assert _ledger(tenant_a.id, old_id)["events"] == ["expired"]
    assert _ledger(tenant_a.id, fresh_id)["status"] == "unknown"
    with tenant_tx(tenant_a.id) as database:
        reason = database.execute_sql("SELECT last_error FROM messages WHERE id = %s",
                                      (old_id,)).fetchone()[0]
    assert "unknown" in reason


def test_deleting_a_tenant_while_a_worker_writes_its_results_does_not_deadlock(
        tenant_a, targets, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    # Regression: the writer locked the ledger rows FOR UPDATE and then, storing
    # their events (a foreign key to tenants), locked the tenant FOR KEY SHARE;
    # the tenant's DELETE locked the tenant and then, cascading, the ledger
    # rows: PostgreSQL killed the delete (40P01).
    ledger_id, _ = _row(tenant_a.id, status="sending")
    holding, go = threading.Event(), threading.Event()
    original = state._write_rows

    def paused_write_rows(database, tenant, rows):  # type: ignore[no-untyped-def]
        holding.set()  # the ledger row is locked by now
        assert go.wait(60)
        return original(database, tenant, rows)

    monkeypatch.setattr(state, "_write_rows", paused_write_rows)
    writing, deleting = race_tenant_delete(
        lambda: outbox.record_results([_claimed(tenant_a.id, ledger_id)],
                                      [SendResult(ledger_id, Outcome.ACCEPTED)]),
        tenant_a.id, targets.dsn("system"), holding, go)
    assert (writing, deleting) == ([], [])
    with system_tx() as database:
        assert database.execute_sql("SELECT count(*) FROM messages WHERE tenant_id = %s",
                                    (str(tenant_a.id),)).fetchone()[0] == 0
    assert RETRIED not in caplog.text  # the lock order, not the delete's retry
