"""The campaign status machine and the lifecycle functions the API calls."""

from __future__ import annotations

import datetime

import pytest

from swiftmail_core.errors import ConflictError, ValidationError
from swiftmail_core.sending import ledger, lifecycle
from tests.core.sending.conftest import ledger_counts, make_campaign


def test_schedule_pause_resume_cancel(audience) -> None:  # type: ignore[no-untyped-def]
    tenant, _, campaign_id = audience
    when = datetime.datetime(2030, 1, 1, tzinfo=datetime.UTC)
    assert lifecycle.schedule_campaign(tenant.id, campaign_id, when)["status"] == "scheduled"
    with pytest.raises(ConflictError):
        lifecycle.pause_campaign(tenant.id, campaign_id)
    with pytest.raises(ConflictError):
        lifecycle.resume_campaign(tenant.id, campaign_id)
    assert lifecycle.cancel_campaign(tenant.id, campaign_id)["status"] == "cancelled"
    with pytest.raises(ConflictError):
        lifecycle.schedule_campaign(tenant.id, campaign_id, when)


def test_schedule_refuses_unsendable_campaign_naming_field(tenant_a) -> None:  # type: ignore[no-untyped-def]
    campaign_id = make_campaign(tenant_a.id, [])
    with pytest.raises(ValidationError) as caught:
        lifecycle.schedule_campaign(tenant_a.id, campaign_id)
    assert caught.value.errors[0]["field"] == "list_ids"


def test_naive_time_is_refused(audience) -> None:  # type: ignore[no-untyped-def]
    tenant, _, campaign_id = audience
    with pytest.raises(ValidationError):
        lifecycle.schedule_campaign(tenant.id, campaign_id, datetime.datetime(2030, 1, 1))


def test_test_send_and_transactional_write_ledger_rows(audience) -> None:  # type: ignore[no-untyped-def]
    tenant, _, campaign_id = audience
    ids = lifecycle.test_send(tenant.id, campaign_id, ["user1@example.test", "qa@else.test"])
    assert len(ids) == 2
    assert ledger_counts(tenant.id, campaign_id) == {"queued": 2}
    with pytest.raises(ValidationError):
        lifecycle.test_send(tenant.id, campaign_id, ["not-an-address"])
    row = lifecycle.send_transactional(
        tenant.id, to="user2@example.test", from_email="app@sender.test",
        subject="Your code", text="123456", transport="smtp",
    )
    assert row["kind"] == "transactional" and row["contact_id"] is not None
    assert ledger.get_message(tenant.id, row["id"])["events"] == []
    with pytest.raises(ValidationError) as caught:
        lifecycle.send_transactional(
            tenant.id, to="a@b.test", from_email="app@sender.test", subject="x\r\nBcc: evil",
            text="t",
        )
    assert caught.value.errors[0]["field"] == "subject"


def test_resend_failed_needs_sent_campaign(audience) -> None:  # type: ignore[no-untyped-def]
    tenant, _, campaign_id = audience
    with pytest.raises(ConflictError):
        lifecycle.resend_failed(tenant.id, campaign_id)


def test_audience_resolution_is_set_based_idempotent_and_excludes(audience) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_core.db import tenant_tx
    from swiftmail_core.sending.audience import resolve_audience

    tenant, _, campaign_id = audience
    with tenant_tx(tenant.id) as database:
        database.execute_sql(
            "INSERT INTO suppressions (tenant_id, email_lower, reason) "
            "VALUES (%s, 'user1@example.test', 'manual')", (str(tenant.id),))
        database.execute_sql(
            "UPDATE contacts SET status = 'blocklisted' WHERE email_lower = 'user2@example.test'")
        database.execute_sql(
            "UPDATE subscriptions SET status = 'unsubscribed' FROM contacts c "
            "WHERE c.id = subscriptions.contact_id AND c.email_lower = 'user3@example.test'")
        # A run interrupted after its first rows: the re-run keeps them, adds the rest.
        database.execute_sql(
            "INSERT INTO messages (tenant_id, campaign_id, contact_id, email) "
            "SELECT tenant_id, %s, id, email FROM contacts WHERE email_lower = 'user4@example.test'",
            (str(campaign_id),))
    assert resolve_audience(tenant.id, campaign_id, batch_size=7) == 47
    assert resolve_audience(tenant.id, campaign_id, batch_size=7) == 47
    counts = ledger_counts(tenant.id, campaign_id)
    assert counts == {"queued": 47}


def test_recipient_count_is_the_ledgers_after_an_interrupted_run(audience) -> None:  # type: ignore[no-untyped-def]
    # A fresh resolve counts the rows its ranges wrote; a re-run must count the ledger,
    # which may hold rows of contacts that have left the audience since (kept, sent or not).
    from swiftmail_core.db import tenant_tx
    from swiftmail_core.sending.audience import resolve_audience

    tenant, _, campaign_id = audience
    with tenant_tx(tenant.id) as database:
        database.execute_sql(
            "INSERT INTO messages (tenant_id, campaign_id, contact_id, email) "
            "SELECT tenant_id, %s, id, email FROM contacts WHERE email_lower = 'user1@example.test'",
            (str(campaign_id),))
        database.execute_sql(
            "INSERT INTO suppressions (tenant_id, email_lower, reason) "
            "VALUES (%s, 'user1@example.test', 'manual')", (str(tenant.id),))
    assert resolve_audience(tenant.id, campaign_id, batch_size=7) == 50
    with tenant_tx(tenant.id) as database:
        (recorded,) = database.execute_sql(
            "SELECT recipient_count FROM campaigns WHERE id = %s", (str(campaign_id),)).fetchone()
    assert recorded == sum(ledger_counts(tenant.id, campaign_id).values()) == 50


def test_a_due_campaign_starts_once_even_with_racing_ticks(audience) -> None:  # type: ignore[no-untyped-def]
    from concurrent.futures import ThreadPoolExecutor

    from swiftmail_core.sending.sweeper import start_due_campaigns

    tenant, _, campaign_id = audience
    lifecycle.schedule_campaign(tenant.id, campaign_id)
    with ThreadPoolExecutor(4) as pool:
        started = [row for rows in pool.map(lambda _: start_due_campaigns(), range(4))
                   for row in rows if row[1] == campaign_id]
    assert started == [(tenant.id, campaign_id)]
