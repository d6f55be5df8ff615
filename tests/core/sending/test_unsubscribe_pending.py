"""An unsubscribe ends the contact's campaign mail that is not due yet too.

Rows that wait for an A/B test's decision (``waiting``) and rows of a paused
campaign (``held``) join the queue later; the claim checks the contact and
suppressions, not one list's subscription, so a row left behind by a list
unsubscribe would be sent once released.
"""

from __future__ import annotations

import uuid

import pytest

from swiftmail_core.ab_tests import decision
from swiftmail_core.db import tenant_tx
from swiftmail_core.self_service.changes import unsubscribe
from swiftmail_core.sending import lifecycle
from swiftmail_core.sending.audience import resolve_audience
from tests.core.sending.conftest import cancel_leftover_work
from tests.core.sending.test_ab_tests import ab_campaign, start


@pytest.fixture(autouse=True)
def _leave_no_due_rows(tenant_a):  # type: ignore[no-untyped-def]
    yield
    cancel_leftover_work(tenant_a.id)


def _rows(tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> list[tuple[int, str, str, str]]:
    with tenant_tx(tenant_id) as database:
        return database.execute_sql(
            "SELECT m.id, m.contact_id::text, m.status, c.list_ids[1]::text FROM messages m "
            "JOIN campaigns c ON c.tenant_id = m.tenant_id AND c.id = m.campaign_id "
            "WHERE m.campaign_id = %s ORDER BY m.id", (str(campaign_id),)).fetchall()


def _status(tenant_id: uuid.UUID, ledger_id: int) -> str:
    with tenant_tx(tenant_id) as database:
        return database.execute_sql("SELECT status FROM messages WHERE id = %s",
                                    (ledger_id,)).fetchone()[0]


def test_a_list_unsubscribe_cancels_a_row_waiting_for_the_ab_decision(tenant_a) -> None:
    campaign_id = ab_campaign(tenant_a.id, 20, percent=10, metric="manual")
    start(tenant_a.id, campaign_id)
    resolve_audience(tenant_a.id, campaign_id)
    ledger_id, contact_id, _, list_id = next(
        row for row in _rows(tenant_a.id, campaign_id) if row[2] == "waiting")
    assert unsubscribe(tenant_a.id, uuid.UUID(contact_id), uuid.UUID(list_id), source="test")
    assert _status(tenant_a.id, ledger_id) == "cancelled"
    decision.choose_winner(tenant_a.id, campaign_id, "A")
    assert _status(tenant_a.id, ledger_id) == "cancelled"  # the release left it alone


def test_a_list_unsubscribe_cancels_a_paused_campaigns_held_row(tenant_a) -> None:
    campaign_id = ab_campaign(tenant_a.id, 5, percent=100, metric="manual")
    start(tenant_a.id, campaign_id)
    resolve_audience(tenant_a.id, campaign_id)
    lifecycle.pause_campaign(tenant_a.id, campaign_id)
    ledger_id, contact_id, status, list_id = _rows(tenant_a.id, campaign_id)[0]
    assert status == "held"
    assert unsubscribe(tenant_a.id, uuid.UUID(contact_id), uuid.UUID(list_id), source="test")
    lifecycle.resume_campaign(tenant_a.id, campaign_id)
    assert _status(tenant_a.id, ledger_id) == "cancelled"
