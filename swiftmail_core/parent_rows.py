"""Parent-row locks and deletes that stand in for dropped foreign keys.

Migration 0189 dropped ``messages -> campaigns`` and ``subscriptions ->
lists``, 0191 ``contacts -> tenants`` and ``subscriptions -> contacts``,
0197 ``messages -> tenants``: their per-row checks re-read one parent row
per bulk-written child (docs/architecture.md, "Foreign keys on the hot
paths"). The reference
still holds by construction, with the same locks a foreign key takes:

* a writer of such children first calls ``lock_campaign`` / ``lock_lists``
  / ``lock_tenant`` / ``lock_contacts`` in its transaction (``FOR KEY
  SHARE``, once per statement instead of once per row), so the parent cannot
  be deleted before it commits; a contact the writing statement creates or
  upserts (``ON CONFLICT DO UPDATE`` locks it) needs no separate lock; a
  writer of ledger rows holds the tenant, or a row the tenant's deletion
  cascades to (its campaign, its list);
* the parent is deleted only through ``delete_campaign`` / ``delete_list`` /
  ``delete_contact`` / ``delete_tenant_rows``, which lock it ``FOR UPDATE``
  (waiting for those writers) and delete its children in the same
  transaction, as ``ON DELETE CASCADE`` did.

``swiftmail doctor`` reports any orphan (``orphan_findings``).
"""

from __future__ import annotations

import uuid
from collections.abc import Iterable
from typing import Any

from swiftmail_core.db.audit import Finding
from swiftmail_core.db.connection import is_distributed

_LOCK_CAMPAIGN = "SELECT 1 FROM campaigns WHERE tenant_id = %s AND id = %s FOR KEY SHARE"
_LOCK_LISTS = ("SELECT id FROM lists WHERE tenant_id = %s AND id = ANY (%s::uuid[]) "
               "ORDER BY id FOR KEY SHARE")
_LOCK_TENANT = "SELECT 1 FROM tenants WHERE id = %s FOR KEY SHARE"
#: A contact's enrollments a journey runner may hold (``journeys.runner``'s lock order).
_LOCK_ENROLLMENTS = ("SELECT 1 FROM journey_enrollments WHERE tenant_id = %s AND contact_id = %s "
                     "AND status = 'active' ORDER BY id FOR UPDATE")
_LOCK_CONTACTS = ("SELECT id FROM contacts WHERE tenant_id = %s AND id = ANY (%s::uuid[]) "
                  "ORDER BY id FOR KEY SHARE")

#: (check, query counting orphans across tenants: run as the system role).
ORPHAN_QUERIES = (
    ("no ledger rows of a deleted campaign",
     "SELECT count(*) FROM messages m WHERE m.campaign_id IS NOT NULL AND NOT EXISTS ("
     "SELECT 1 FROM campaigns c WHERE c.tenant_id = m.tenant_id AND c.id = m.campaign_id)"),
    ("no subscriptions to a deleted list",
     "SELECT count(*) FROM subscriptions s WHERE NOT EXISTS ("
     "SELECT 1 FROM lists l WHERE l.tenant_id = s.tenant_id AND l.id = s.list_id)"),
    ("no subscriptions of a deleted contact",
     "SELECT count(*) FROM subscriptions s WHERE NOT EXISTS ("
     "SELECT 1 FROM contacts c WHERE c.tenant_id = s.tenant_id AND c.id = s.contact_id)"),
    ("no contacts of a deleted tenant",
     "SELECT count(*) FROM contacts c WHERE NOT EXISTS ("
     "SELECT 1 FROM tenants t WHERE t.id = c.tenant_id)"),
    ("no ledger rows of a deleted tenant",
     "SELECT count(*) FROM messages m WHERE NOT EXISTS ("
     "SELECT 1 FROM tenants t WHERE t.id = m.tenant_id)"),
)


def lock_campaign(database: Any, tenant_id: uuid.UUID | str,
                  campaign_id: uuid.UUID | str) -> bool:
    """Hold the campaign row until commit (ledger rows may follow); False if it is gone."""
    row = database.execute_sql(_LOCK_CAMPAIGN, (str(tenant_id), str(campaign_id))).fetchone()
    return row is not None


def _lock_rows(database: Any, statement: str, tenant_id: uuid.UUID | str,
               ids: Iterable[uuid.UUID | str]) -> list[str]:
    """Run one locking SELECT of a tenant's rows by id; return the ids it did not find."""
    wanted = [str(ident) for ident in ids]
    found = {str(row[0]) for row in database.execute_sql(
        statement, (str(tenant_id), wanted)).fetchall()}
    return [ident for ident in wanted if ident not in found]


def lock_lists(database: Any, tenant_id: uuid.UUID | str,
               list_ids: Iterable[uuid.UUID | str]) -> list[str]:
    """Hold the lists' rows until commit (subscriptions may follow); return the missing ids."""
    return _lock_rows(database, _LOCK_LISTS, tenant_id, list_ids)


def lock_tenant(database: Any, tenant_id: uuid.UUID | str) -> bool:
    """Hold the tenant row until commit (contacts or ledger rows may follow); False if it is gone."""
    return database.execute_sql(_LOCK_TENANT, (str(tenant_id),)).fetchone() is not None


def lock_tenant_first(database: Any, tenant_id: uuid.UUID | str) -> bool:
    """Lock the tenant row before the transaction locks any of its rows; False if it is gone.

    ``delete_tenant_rows`` locks the tenant, then its rows; a writer that holds
    one of those rows and then locks the tenant (the foreign key of a row it
    inserts) deadlocks with it. On Citus ``tenants`` is a reference table,
    where a row lock takes a cluster-wide lock on its one shard: every such
    transaction would queue behind the others (concurrent audience ranges
    deadlocked on it), so there nothing is locked, True is returned, and the
    delete's retry (``tenants.delete_tenant``) settles a deadlock it loses.
    """
    if is_distributed():
        return True
    return lock_tenant(database, tenant_id)


def lock_contacts(database: Any, tenant_id: uuid.UUID | str,
                  contact_ids: Iterable[uuid.UUID | str]) -> list[str]:
    """Hold the contacts' rows until commit (subscriptions may follow); return the missing ids."""
    return _lock_rows(database, _LOCK_CONTACTS, tenant_id, contact_ids)


def delete_campaign(database: Any, tenant_id: uuid.UUID | str,
                    campaign_id: uuid.UUID | str) -> None:
    """Delete a campaign and its ledger rows (call with the campaign row locked FOR UPDATE)."""
    database.execute_sql("DELETE FROM messages WHERE tenant_id = %s AND campaign_id = %s",
                         (str(tenant_id), str(campaign_id)))
    database.execute_sql("DELETE FROM campaigns WHERE tenant_id = %s AND id = %s",
                         (str(tenant_id), str(campaign_id)))


def delete_list(database: Any, tenant_id: uuid.UUID | str, list_id: uuid.UUID | str) -> None:
    """Delete a list and its subscriptions, the list row locked FOR UPDATE first."""
    database.execute_sql("SELECT 1 FROM lists WHERE tenant_id = %s AND id = %s FOR UPDATE",
                         (str(tenant_id), str(list_id)))
    database.execute_sql("DELETE FROM subscriptions WHERE tenant_id = %s AND list_id = %s",
                         (str(tenant_id), str(list_id)))
    database.execute_sql("DELETE FROM lists WHERE tenant_id = %s AND id = %s",
                         (str(tenant_id), str(list_id)))


def delete_contact(database: Any, tenant_id: uuid.UUID | str,
                   contact_id: uuid.UUID | str) -> bool:
    """Delete a contact, then its subscriptions; False if there was no such contact.

    Its active journey enrollments are locked first, in the order the journey
    runner takes them (enrollment, then contact): the DELETE's cascade would
    lock them after the contact, and a step holding its enrollment while it
    locks the contact (a list change) deadlocked with it. The DELETE locks the
    contact row (waiting for writers holding it ``FOR KEY SHARE``); the
    subscriptions' DELETE is a later statement, so it also sees the rows such
    a writer committed meanwhile.
    """
    database.execute_sql(_LOCK_ENROLLMENTS, (str(tenant_id), str(contact_id)))
    deleted = database.execute_sql(
        "DELETE FROM contacts WHERE tenant_id = %s AND id = %s RETURNING 1",
        (str(tenant_id), str(contact_id))).fetchone()
    database.execute_sql("DELETE FROM subscriptions WHERE tenant_id = %s AND contact_id = %s",
                         (str(tenant_id), str(contact_id)))
    return deleted is not None


def delete_tenant_rows(database: Any, tenant_id: uuid.UUID | str) -> None:
    """Delete a tenant, then its contacts, subscriptions and ledger rows (the system role's transaction).

    Deleting the tenant row locks it (waiting for writers of contacts and ledger
    rows, which hold it ``FOR KEY SHARE``) and cascades to every table that
    keeps its foreign key to tenants (waiting for writers holding a campaign or
    a list); contacts and subscriptions (0191) and ledger rows (0197) follow in
    later statements of the same transaction, which see what such a writer
    committed meanwhile.
    """
    database.execute_sql("DELETE FROM tenants WHERE id = %s", (str(tenant_id),))
    database.execute_sql("DELETE FROM messages WHERE tenant_id = %s", (str(tenant_id),))
    database.execute_sql("DELETE FROM contacts WHERE tenant_id = %s", (str(tenant_id),))
    database.execute_sql("DELETE FROM subscriptions WHERE tenant_id = %s", (str(tenant_id),))


def orphan_findings(cursor: Any) -> list[Finding]:
    """Count children whose parent is gone (``cursor`` as the system role: every tenant)."""
    findings = []
    for check, sql in ORPHAN_QUERIES:
        cursor.execute(sql)
        (count,) = cursor.fetchone()
        findings.append(Finding(count == 0, check, f"{count} orphan rows" if count else ""))
    return findings
