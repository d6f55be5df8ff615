"""Fixtures for sending tests: audiences and campaigns built in bulk SQL."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from swiftmail_core.db import tenant_tx


def make_list(tenant_id: uuid.UUID, name: str | None = None) -> uuid.UUID:
    """Create a list and return its id."""
    list_id = uuid.uuid4()
    with tenant_tx(tenant_id) as database:
        database.execute_sql(
            "INSERT INTO lists (tenant_id, id, name) VALUES (%s, %s, %s)",
            (str(tenant_id), str(list_id), name or f"list-{list_id.hex[:8]}"),
        )
    return list_id


def add_subscribers(
    tenant_id: uuid.UUID, list_id: uuid.UUID, count: int, *, start: int = 0,
    status: str = "confirmed", domain: str = "example.test",
) -> None:
    """Create (or reuse) contacts user<i>@domain and subscribe them to the list."""
    with tenant_tx(tenant_id) as database:
        database.execute_sql(
            "INSERT INTO contacts (tenant_id, email, name, attributes) "
            "SELECT %s, 'user' || i || '@' || %s, 'User ' || i, "
            "jsonb_build_object('first_name', 'First' || i, 'plan', 'gold') "
            "FROM generate_series(%s, %s) AS i "
            "ON CONFLICT (tenant_id, email_lower) DO NOTHING",
            (str(tenant_id), domain, start, start + count - 1),
        )
        database.execute_sql(
            "INSERT INTO subscriptions (tenant_id, list_id, contact_id, status) "
            "SELECT %s, %s, c.id, %s FROM contacts c "
            "WHERE c.email_lower IN (SELECT 'user' || i || '@' || %s FROM generate_series(%s, %s) i) "
            "ON CONFLICT DO NOTHING",
            (str(tenant_id), str(list_id), status, domain, start, start + count - 1),
        )


def make_campaign(tenant_id: uuid.UUID, list_ids: list[uuid.UUID], **fields: Any) -> uuid.UUID:
    """Create a draft campaign to the lists and return its id."""
    campaign_id = uuid.uuid4()
    values = {
        "name": "Spring news", "subject": "Hello {{ contact.first_name }}",
        "html": "<p>Hi {{ contact.first_name }}, plan {{ contact.plan }}</p>",
        "from_email": "news@sender.test", "from_name": "Sender", "transport": "smtp",
        **fields,
    }
    with tenant_tx(tenant_id) as database:
        database.execute_sql(
            "INSERT INTO campaigns (tenant_id, id, name, subject, html, from_email, from_name, "
            "transport, list_ids) VALUES (%s, %s, %s, %s, %s, %s, %s, %s, %s::uuid[])",
            (str(tenant_id), str(campaign_id), values["name"], values["subject"], values["html"],
             values["from_email"], values["from_name"], values["transport"],
             [str(list_id) for list_id in list_ids]),
        )
    return campaign_id


def park_other_tenants_work(tenant_id: uuid.UUID) -> None:
    """Cancel due ledger rows other tests left behind (the claim is cross-tenant)."""
    from swiftmail_core.db import system_tx

    with system_tx() as database:
        database.execute_sql(
            "UPDATE messages SET status = 'cancelled' WHERE tenant_id <> %s "
            "AND status IN ('queued', 'deferred', 'sending', 'held')", (str(tenant_id),))
        # Their tenants would still take a share of the next claim.
        database.execute_sql("DELETE FROM due_tenants WHERE tenant_id <> %s",
                             (str(tenant_id),))


def cancel_leftover_work(tenant_id: uuid.UUID) -> None:
    """Cancel the tenant's unsent ledger rows, so later tests' claims never meet them."""
    from swiftmail_core.db import system_tx

    with system_tx() as database:
        database.execute_sql(
            "UPDATE messages SET status = 'cancelled' WHERE tenant_id = %s "
            "AND status IN ('queued', 'deferred', 'sending', 'held', 'waiting')",
            (str(tenant_id),))


def ledger_counts(tenant_id: uuid.UUID, campaign_id: uuid.UUID) -> dict[str, int]:
    """Return {status: count} of a campaign's ledger."""
    with tenant_tx(tenant_id) as database:
        rows = database.execute_sql(
            "SELECT status, count(*) FROM messages WHERE campaign_id = %s GROUP BY status",
            (str(campaign_id),),
        ).fetchall()
    return {status: int(count) for status, count in rows}


@pytest.fixture
def audience(tenant_a):  # type: ignore[no-untyped-def]
    """A tenant with two overlapping lists (30 + 30, 10 shared) and a draft campaign."""
    first, second = make_list(tenant_a.id), make_list(tenant_a.id)
    add_subscribers(tenant_a.id, first, 30, start=0)
    add_subscribers(tenant_a.id, second, 30, start=20)
    campaign_id = make_campaign(tenant_a.id, [first, second])
    return tenant_a, [first, second], campaign_id
