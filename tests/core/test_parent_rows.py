"""The parent-row locks and deletes standing in for the foreign keys 0189 dropped."""

from __future__ import annotations

import threading
import uuid

import psycopg2
import pytest
from psycopg2 import errors

from swiftmail_core import parent_rows
from swiftmail_core.db import tenant_tx
from swiftmail_core.doctor import _check_orphans
from swiftmail_core.models import Campaign, Message
from swiftmail_core.sending.lifecycle import send_transactional
from swiftmail_core.tenants import create_tenant, delete_tenant


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
            "'subscriptions'::regclass, 'contacts'::regclass) ORDER BY 1, 2")
        # 0189 dropped messages -> campaigns and subscriptions -> lists; 0191
        # contacts -> tenants and subscriptions -> contacts; 0197 messages -> tenants.
        assert cursor.fetchall() == []
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


def _subscribed_contact(caller) -> tuple[str, str]:  # type: ignore[no-untyped-def]
    list_id = caller.post("/v1/lists", {"name": f"parent {uuid.uuid4().hex[:6]}"}).json["id"]
    contact = caller.post("/v1/contacts", {"email": f"{uuid.uuid4().hex[:8]}@example.com"})
    assert contact.status_code == 201, contact.text
    subscribed = caller.post(f"/v1/lists/{list_id}/subscriptions",
                             {"contact_id": contact.json["id"]})
    assert subscribed.status_code == 201, subscribed.text
    return list_id, contact.json["id"]


def test_deleting_a_contact_deletes_its_subscriptions(owner_a, targets) -> None:
    # Regression (0191): ON DELETE CASCADE from contacts no longer removes them.
    list_id, contact_id = _subscribed_contact(owner_a)
    assert owner_a.delete(f"/v1/contacts/{contact_id}").status_code == 204
    assert _system_count(targets, "SELECT count(*) FROM subscriptions WHERE contact_id = %s",
                         (contact_id,)) == 0
    gone = owner_a.post(f"/v1/lists/{list_id}/subscriptions", {"contact_id": contact_id})
    assert gone.status_code == 404


def test_deleting_a_tenant_deletes_its_contacts_and_subscriptions(make_caller, targets) -> None:
    # Regression (0191): neither table cascades from tenants any more.
    tenant = create_tenant(f"parent-rows-{uuid.uuid4().hex[:8]}")
    _subscribed_contact(make_caller(tenant))
    delete_tenant(str(tenant.id))
    for table in ("contacts", "subscriptions"):
        assert _system_count(targets, f"SELECT count(*) FROM {table} WHERE tenant_id = %s",
                             (str(tenant.id),)) == 0


def test_deleting_a_tenant_deletes_its_ledger_rows(make_caller, targets) -> None:
    # Regression (0197): the ledger no longer cascades from tenants.
    tenant = create_tenant(f"parent-ledger-{uuid.uuid4().hex[:8]}")
    send_transactional(tenant.id, to="one@example.com", from_email="app@example.com",
                       subject="hello", text="hi")
    delete_tenant(str(tenant.id))
    assert _system_count(targets, "SELECT count(*) FROM messages WHERE tenant_id = %s",
                         (str(tenant.id),)) == 0


def test_a_subscription_committed_while_its_contact_is_deleted_goes_too(
    owner_a, targets,
) -> None:
    # The contact's DELETE waits for a writer holding it FOR KEY SHARE; the
    # subscriptions' DELETE comes after it and sees what that writer committed.
    _, contact_id = _subscribed_contact(owner_a)
    other = owner_a.post("/v1/lists", {"name": f"late {uuid.uuid4().hex[:6]}"}).json["id"]
    writer = _app_connection(targets, owner_a.tenant_id)
    deleter = _app_connection(targets, owner_a.tenant_id)
    tenant = str(owner_a.tenant_id)
    try:
        with writer.cursor() as cursor:
            cursor.execute(parent_rows._LOCK_CONTACTS, (tenant, [contact_id]))
            assert cursor.fetchall()
            cursor.execute("INSERT INTO subscriptions (tenant_id, list_id, contact_id) "
                           "VALUES (%s, %s, %s)", (tenant, other, contact_id))
        done = threading.Event()

        def delete() -> None:
            class Database:
                def execute_sql(self, sql, params):  # type: ignore[no-untyped-def]
                    cursor = deleter.cursor()
                    cursor.execute(sql, params)
                    return cursor
            parent_rows.delete_contact(Database(), tenant, contact_id)
            deleter.commit()
            done.set()

        thread = threading.Thread(target=delete)
        thread.start()
        assert not done.wait(0.5)  # blocked by the writer's lock (not a timing figure)
        writer.commit()
        thread.join(60)
        assert done.is_set()
    finally:
        writer.close()
        deleter.close()
    assert _system_count(targets, "SELECT count(*) FROM subscriptions WHERE contact_id = %s",
                         (contact_id,)) == 0


def test_a_writer_holding_the_tenant_blocks_its_deletion(targets) -> None:
    tenant = create_tenant(f"parent-lock-{uuid.uuid4().hex[:8]}")
    writer = _app_connection(targets, tenant.id)
    deleter = psycopg2.connect(targets.dsn("system"))
    try:
        with writer.cursor() as cursor:
            cursor.execute(parent_rows._LOCK_TENANT, (str(tenant.id),))
            assert cursor.fetchone() is not None
        with deleter.cursor() as cursor, pytest.raises(errors.LockNotAvailable):
            cursor.execute("SELECT 1 FROM tenants WHERE id = %s FOR UPDATE NOWAIT",
                           (str(tenant.id),))
    finally:
        writer.close()
        deleter.close()
        delete_tenant(str(tenant.id))


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
            cursor.execute("INSERT INTO subscriptions (tenant_id, list_id, contact_id) "
                           "SELECT tenant_id, list_id, %s FROM subscriptions WHERE contact_id = %s",
                           (str(uuid.uuid4()), contact))
            cursor.execute("INSERT INTO messages (tenant_id, campaign_id, email) "
                           "VALUES (%s, %s, 'x@example.com')",
                           (str(owner_a.tenant_id), str(uuid.uuid4())))
            found = {finding.check: finding for finding in parent_rows.orphan_findings(cursor)}
        assert not found["no ledger rows of a deleted campaign"].ok
        assert found["no subscriptions to a deleted list"].detail == "2 orphan rows"
        assert found["no subscriptions of a deleted contact"].detail == "1 orphan rows"
        assert found["no contacts of a deleted tenant"].ok
        assert found["no ledger rows of a deleted tenant"].ok
    finally:
        connection.rollback()
        connection.close()


def test_orphan_findings_report_ledger_rows_of_a_deleted_tenant(targets) -> None:
    # As the system role (the app role writes its own tenant's rows only), rolled back.
    connection = psycopg2.connect(targets.dsn("system"))
    try:
        with connection.cursor() as cursor:
            cursor.execute("INSERT INTO messages (tenant_id, email) VALUES (%s, 'x@example.com')",
                           (str(uuid.uuid4()),))
            found = {finding.check: finding for finding in parent_rows.orphan_findings(cursor)}
        assert found["no ledger rows of a deleted tenant"].detail == "1 orphan rows"
    finally:
        connection.rollback()
        connection.close()


def test_the_doctor_runs_every_orphan_check(targets) -> None:
    # Regression: the doctor runs them as the system role, which could not read
    # lists: every run reported "permission denied for table lists" as a warning.
    findings = _check_orphans(targets)
    assert [finding.check for finding in findings] == [
        check for check, _ in parent_rows.ORPHAN_QUERIES], findings
