"""The parent-row locks and deletes standing in for the foreign keys 0189 dropped."""

from __future__ import annotations

import uuid

import psycopg2
import pytest
from psycopg2 import errors

from swiftmail_core import parent_rows
from swiftmail_core.db import tenant_tx
from swiftmail_core.models import Campaign, Message


def _system_count(targets, sql: str, params: tuple) -> int:  # type: ignore[no-untyped-def]
    connection = psycopg2.connect(targets.dsn("system"))
    try:
        with connection, connection.cursor() as cursor:
            cursor.execute(sql, params)
            return int(cursor.fetchone()[0])
    finally:
        connection.close()


def _app_connection(targets, tenant_id):  # type: ignore[no-untyped-def]
    connection = psycopg2.connect(targets.dsn("app"))
    with connection.cursor() as cursor:
        cursor.execute("SELECT set_config('swiftmail.tenant_id', %s, true)", (str(tenant_id),))
    return connection


def test_the_hot_tables_keep_only_the_foreign_keys_that_cascade_from_tenants(
    owner_connection,
) -> None:
    with owner_connection.cursor() as cursor:
        cursor.execute(
            "SELECT conrelid::regclass::text, confrelid::regclass::text FROM pg_constraint "
            "WHERE contype = 'f' AND conrelid IN ('messages'::regclass, "
            "'subscriptions'::regclass) ORDER BY 1, 2")
        assert cursor.fetchall() == [("messages", "tenants"), ("subscriptions", "contacts")]
        cursor.execute("SELECT to_regclass('subscriptions_confirmed_idx')")
        assert cursor.fetchone()[0] is None


def test_deleting_a_cancelled_campaign_deletes_its_ledger_rows(owner_a, targets) -> None:
    # Regression (0189): ON DELETE CASCADE from campaigns no longer removes them.
    made = owner_a.post("/v1/campaigns", {"name": "parent rows"})
    assert made.status_code == 201, made.text
    campaign_id = made.json["id"]
    with tenant_tx(owner_a.tenant_id):
        Message.insert_many([
            {"tenant_id": owner_a.tenant_id, "campaign_id": campaign_id,
             "email": f"r{n}@example.com", "kind": "campaign", "status": "cancelled"}
            for n in range(3)]).execute()
        Campaign.update(status="cancelled").where(Campaign.id == campaign_id).execute()
    assert owner_a.delete(f"/v1/campaigns/{campaign_id}").status_code == 204
    assert _system_count(targets, "SELECT count(*) FROM messages WHERE campaign_id = %s",
                         (campaign_id,)) == 0


def test_deleting_a_list_deletes_its_subscriptions(owner_a, targets) -> None:
    # Regression (0189): ON DELETE CASCADE from lists no longer removes them.
    made = owner_a.post("/v1/lists", {"name": f"parent rows {uuid.uuid4().hex[:6]}"})
    list_id = made.json["id"]
    contact = owner_a.post("/v1/contacts", {"email": f"{uuid.uuid4().hex[:8]}@example.com"})
    assert contact.status_code == 201, contact.text
    subscribed = owner_a.post(f"/v1/lists/{list_id}/subscriptions",
                              {"contact_id": contact.json["id"]})
    assert subscribed.status_code == 201, subscribed.text
    assert owner_a.delete(f"/v1/lists/{list_id}").status_code == 204
    assert _system_count(targets, "SELECT count(*) FROM subscriptions WHERE list_id = %s",
                         (list_id,)) == 0
    gone = owner_a.post(f"/v1/lists/{list_id}/subscriptions", {"contact_id": contact.json["id"]})
    assert gone.status_code == 404


def test_a_writer_holding_the_campaign_blocks_its_deletion(owner_a, targets) -> None:
    campaign_id = owner_a.post("/v1/campaigns", {"name": "locked"}).json["id"]
    writer = _app_connection(targets, owner_a.tenant_id)
    deleter = _app_connection(targets, owner_a.tenant_id)
    try:
        with writer.cursor() as cursor:
            cursor.execute(parent_rows._LOCK_CAMPAIGN, (str(owner_a.tenant_id), campaign_id))
            assert cursor.fetchone() is not None
        with deleter.cursor() as cursor, pytest.raises(errors.LockNotAvailable):
            cursor.execute("SELECT 1 FROM campaigns WHERE tenant_id = %s AND id = %s "
                           "FOR UPDATE NOWAIT", (str(owner_a.tenant_id), campaign_id))
    finally:
        writer.close()
        deleter.close()


def test_orphan_findings_report_children_of_a_deleted_parent(owner_a, targets) -> None:
    # Planted and checked in one transaction that is rolled back: nothing is left for
    # `swiftmail doctor` runs of other tests to find.
    connection = _app_connection(targets, owner_a.tenant_id)
    try:
        with connection.cursor() as cursor:
            assert all(finding.ok for finding in parent_rows.orphan_findings(cursor))
            contact = str(uuid.uuid4())
            cursor.execute("INSERT INTO contacts (tenant_id, id, email) VALUES (%s, %s, %s)",
                           (str(owner_a.tenant_id), contact, f"{contact[:8]}@example.com"))
            cursor.execute("INSERT INTO subscriptions (tenant_id, list_id, contact_id) "
                           "VALUES (%s, %s, %s)", (str(owner_a.tenant_id), str(uuid.uuid4()),
                                                    contact))
            cursor.execute("INSERT INTO messages (tenant_id, campaign_id, email) "
                           "VALUES (%s, %s, 'x@example.com')",
                           (str(owner_a.tenant_id), str(uuid.uuid4())))
            found = {finding.check: finding for finding in parent_rows.orphan_findings(cursor)}
        assert not found["no ledger rows of a deleted campaign"].ok
        assert found["no subscriptions to a deleted list"].detail == "1 orphan rows"
    finally:
        connection.rollback()
        connection.close()
