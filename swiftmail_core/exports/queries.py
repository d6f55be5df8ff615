"""The SELECT behind each export, with formula-safe text cells.

Each builder returns SQL for ``COPY (...) TO STDOUT``; parameters are bound
with ``cursor.mogrify`` because COPY takes none. Row-level security limits
every query to the tenant of the enclosing ``tenant_tx``; each also names the
tenant, so on Citus it reads one shard.
"""

from __future__ import annotations

import uuid
from typing import Any

from swiftmail_core.exports.csv_safety import escaped_sql

EXPORT_KINDS = ("export_contacts", "export_suppressions", "export_ledger")


def _select(columns: list[tuple[str, bool]]) -> str:
    """Return a select list; ``True`` marks text cells to escape.

    A column may carry its alias after a space: ``"c.attributes::text attributes"``.
    """
    parts = []
    for column, text in columns:
        expression, _, alias = column.partition(" ")
        alias = alias or expression.split(".")[-1]
        parts.append(f"{escaped_sql(expression) if text else expression} AS {alias}")
    return ", ".join(parts)


def contacts_query(cursor: Any, tenant_id: uuid.UUID,
                   list_id: uuid.UUID | None = None) -> str:
    """Return the contacts export query (optionally one list's subscribers)."""
    columns = _select([
        ("c.id", False), ("c.email", True), ("c.name", True), ("c.status", False),
        ("c.attributes::text attributes", True), ("c.created_at", False),
        ("c.updated_at", False),
    ])
    where = "WHERE c.tenant_id = %s"
    params: tuple[Any, ...] = (str(tenant_id),)
    if list_id is not None:
        where += (
            " AND EXISTS (SELECT 1 FROM subscriptions s WHERE s.tenant_id = %s "
            "AND s.contact_id = c.id AND s.list_id = %s)"
        )
        params += (str(tenant_id), str(list_id))
    sql = f"SELECT {columns} FROM contacts c {where} ORDER BY c.created_at, c.id"
    return cursor.mogrify(sql, params).decode()


def suppressions_query(cursor: Any, tenant_id: uuid.UUID) -> str:
    """Return the suppressions export query."""
    columns = _select([
        ("s.email_lower email", True), ("s.reason", False), ("s.source", True), ("s.detail", True),
        ("s.created_at", False), ("s.expires_at", False),
    ])
    return cursor.mogrify(
        f"SELECT {columns} FROM suppressions s WHERE s.tenant_id = %s ORDER BY s.email_lower",
        (str(tenant_id),)).decode()


def ledger_query(cursor: Any, tenant_id: uuid.UUID, campaign_id: uuid.UUID | None) -> str:
    """Return the message ledger export query (one campaign, or every message).

    APPSEC: the row's internal id comes from a sequence shared by every
    tenant, so it is not exported (the API shows it only as an opaque public
    id); ``message_id``, the RFC 5322 Message-ID, identifies each message.
    """
    columns = _select([
        ("m.campaign_id", False), ("m.contact_id", False), ("m.email", True),
        ("m.kind", False), ("m.status", False), ("m.variant", False), ("m.attempts", False),
        ("m.message_id", True), ("m.transport", True), ("m.provider_message_id", True),
        ("m.last_error", True), ("m.created_at", False), ("m.sent_at", False),
        ("m.updated_at", False),
    ])
    where = "WHERE m.tenant_id = %s"
    params: tuple[str, ...] = (str(tenant_id),)
    if campaign_id is not None:
        where, params = where + " AND m.campaign_id = %s", (*params, str(campaign_id))
    return cursor.mogrify(
        f"SELECT {columns} FROM messages m {where} ORDER BY m.id", params
    ).decode()
