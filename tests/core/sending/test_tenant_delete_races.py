"""`swiftmail tenant delete` racing campaign writers: no deadlock (40P01).

The tenant's DELETE locks the tenant row and then, cascading, its campaigns.
A writer that held its campaign before its ledger rows' foreign key locked
the tenant took the reverse order. Each test pauses the writer holding its
first lock, starts the delete, and lets the writer go once the delete waits
for a row lock (pg_stat_activity): no timing dependence.
"""

from __future__ import annotations

import threading
from typing import Any

from swiftmail_core import parent_rows
from swiftmail_core.db import system_tx
from swiftmail_core.errors import NotFoundError
from swiftmail_core.sending import audience as audience_module
from swiftmail_core.sending import due_tenants, lifecycle
from tests.core.lock_waits import RETRIED, race_tenant_delete
from tests.core.sending.conftest import add_subscribers, make_campaign, make_list


def _pause_after(monkeypatch, owner: Any, name: str, holding: threading.Event,  # type: ignore[no-untyped-def]
                 go: threading.Event, *, before: bool = False) -> None:
    """Make ``owner.name`` signal ``holding`` and wait for ``go`` (after its call, or before)."""
    original = getattr(owner, name)

    def paused(*args, **kwargs):  # type: ignore[no-untyped-def]
        if not before:
            result = original(*args, **kwargs)
        holding.set()
        assert go.wait(60)
        return original(*args, **kwargs) if before else result

    monkeypatch.setattr(owner, name, paused)


def _rows_left(tenant_id) -> list[int]:  # type: ignore[no-untyped-def]
    with system_tx() as database:
        return [database.execute_sql(f"SELECT count(*) FROM {table} WHERE {column} = %s",
                                     (str(tenant_id),)).fetchone()[0]
                for table, column in (("tenants", "id"), ("campaigns", "tenant_id"),
                                      ("messages", "tenant_id"), ("due_tenants", "tenant_id"))]


def _campaign(tenant_id):  # type: ignore[no-untyped-def]
    list_id = make_list(tenant_id)
    add_subscribers(tenant_id, list_id, 5)
    return make_campaign(tenant_id, [list_id])


def test_deleting_a_tenant_while_its_audience_is_written_does_not_deadlock(
        tenant_a, targets, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    # Regression: a range's transaction locked the campaign FOR KEY SHARE and
    # then, inserting its ledger rows (a foreign key to tenants), the tenant;
    # the tenant's DELETE locked the tenant and then, cascading, the campaign.
    campaign_id = _campaign(tenant_a.id)
    holding, go = threading.Event(), threading.Event()
    _pause_after(monkeypatch, parent_rows, "lock_campaign", holding, go)
    resolving, deleting = race_tenant_delete(
        lambda: audience_module.resolve_audience(tenant_a.id, campaign_id),
        tenant_a.id, targets.dsn("system"), holding, go)
    assert deleting == []
    # The range commits first; its closing transaction finds the tenant gone, or
    # locks it just before the delete does and finishes first.
    assert all(isinstance(ex, NotFoundError) for ex in resolving), resolving
    assert _rows_left(tenant_a.id) == [0, 0, 0, 0]
    assert RETRIED not in caplog.text  # the lock order, not the delete's retry


def test_deleting_a_tenant_while_its_audience_is_marked_resolved_does_not_deadlock(
        tenant_a, targets, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    # Regression: the closing transaction updated the campaign and then marked
    # the tenant due (a foreign key to tenants): the reverse of the delete's order.
    campaign_id = _campaign(tenant_a.id)
    holding, go = threading.Event(), threading.Event()
    _pause_after(monkeypatch, due_tenants, "mark_due", holding, go, before=True)
    resolving, deleting = race_tenant_delete(
        lambda: audience_module.resolve_audience(tenant_a.id, campaign_id),
        tenant_a.id, targets.dsn("system"), holding, go)
    assert (resolving, deleting) == ([], [])
    assert _rows_left(tenant_a.id) == [0, 0, 0, 0]
    assert RETRIED not in caplog.text  # the lock order, not the delete's retry


def test_deleting_a_tenant_during_a_test_send_does_not_deadlock(
        tenant_a, targets, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    # Regression: the test send locked the campaign FOR KEY SHARE and then,
    # inserting its ledger rows, the tenant: the reverse of the delete's order.
    campaign_id = _campaign(tenant_a.id)
    holding, go = threading.Event(), threading.Event()
    _pause_after(monkeypatch, parent_rows, "lock_campaign", holding, go)
    sending, deleting = race_tenant_delete(
        lambda: lifecycle.test_send(tenant_a.id, campaign_id, ["qa@race.test"]),
        tenant_a.id, targets.dsn("system"), holding, go)
    assert (sending, deleting) == ([], [])
    assert _rows_left(tenant_a.id) == [0, 0, 0, 0]
    assert RETRIED not in caplog.text  # the lock order, not the delete's retry


def test_deleting_a_tenant_retries_when_it_loses_a_deadlock(
        tenant_a, targets, monkeypatch, caplog) -> None:  # type: ignore[no-untyped-def]
    # Regression: every writer that holds a tenant's row before its foreign key
    # locks the tenant (here resuming a campaign: the campaign updated, then the
    # tenant marked due) is the reverse of the delete's order, and PostgreSQL
    # killed the delete (40P01). The delete now runs again: nothing happened
    # in the transaction that lost.
    campaign_id = make_campaign(tenant_a.id, [make_list(tenant_a.id)])
    with system_tx() as database:
        database.execute_sql("UPDATE campaigns SET status = 'paused' WHERE id = %s",
                             (str(campaign_id),))
    holding, go = threading.Event(), threading.Event()
    _pause_after(monkeypatch, due_tenants, "mark_due", holding, go, before=True)
    resuming, deleting = race_tenant_delete(
        lambda: lifecycle.resume_campaign(tenant_a.id, campaign_id),
        tenant_a.id, targets.dsn("system"), holding, go)
    assert (resuming, deleting) == ([], [])
    assert _rows_left(tenant_a.id) == [0, 0, 0, 0]
    assert RETRIED in caplog.text  # it lost once, and ran again


def test_a_transactional_message_written_while_its_tenant_is_deleted_goes_with_it(
        tenant_a, targets, monkeypatch) -> None:  # type: ignore[no-untyped-def]
    # Regression (0197): the ledger has no foreign key to tenants any more. The
    # send holds the tenant row, so the delete waits for it and then, in a
    # later statement, deletes the row the send committed meanwhile.
    holding, go = threading.Event(), threading.Event()
    _pause_after(monkeypatch, lifecycle, "_contact_id", holding, go)
    sending, deleting = race_tenant_delete(
        lambda: lifecycle.send_transactional(
            tenant_a.id, to="late@race.test", from_email="app@race.test",
            subject="receipt", text="thanks"),
        tenant_a.id, targets.dsn("system"), holding, go)
    assert (sending, deleting) == ([], [])
    assert _rows_left(tenant_a.id) == [0, 0, 0, 0]
