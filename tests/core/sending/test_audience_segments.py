"""Campaigns target lists and/or segments, resolved set-based, with an optional sunset."""

from __future__ import annotations

import uuid

from swiftmail_core.db import tenant_tx
from swiftmail_core.sending.audience import resolve_audience
from tests.core.sending.conftest import add_subscribers, make_campaign, make_list


def _segment(tenant_id, definition: str) -> str:  # type: ignore[no-untyped-def]
    segment_id = str(uuid.uuid4())
    with tenant_tx(tenant_id) as database:
        database.execute_sql("INSERT INTO segments (tenant_id, id, name, definition) "
                             "VALUES (%s, %s, %s, %s::jsonb)",
                             (str(tenant_id), segment_id, f"s-{segment_id[:8]}", definition))
    return segment_id


def _recipients(tenant_id, campaign_id) -> set[str]:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id) as database:
        return {row[0] for row in database.execute_sql(
            "SELECT email FROM messages WHERE campaign_id = %s", (str(campaign_id),))}


def _set(tenant_id, campaign_id, **columns) -> None:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id) as database:
        for name, value in columns.items():
            cast = "::uuid[]" if name.endswith("_ids") else ""
            database.execute_sql(f"UPDATE campaigns SET {name} = %s{cast} WHERE id = %s",
                                 (value, str(campaign_id)))


def test_a_campaign_reaches_its_lists_and_its_segments_once_each(tenant_a, tenant_b) -> None:  # type: ignore[no-untyped-def]
    listed = make_list(tenant_a.id)
    add_subscribers(tenant_a.id, listed, 3, domain="lists.test")           # user0..2
    add_subscribers(tenant_a.id, make_list(tenant_a.id), 4, start=2,
                    domain="lists.test")                                   # user2..5, another list
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql("UPDATE contacts SET attributes = attributes || '{\"vip\": true}' "
                             "WHERE email IN ('user4@lists.test', 'user1@lists.test')")
    vip = _segment(tenant_a.id, '{"attribute": "vip", "op": "eq", "value": true}')
    campaign = make_campaign(tenant_a.id, [listed])
    _set(tenant_a.id, campaign, segment_ids=[vip])
    resolve_audience(tenant_a.id, campaign)
    assert _recipients(tenant_a.id, campaign) == {
        "user0@lists.test", "user1@lists.test", "user2@lists.test", "user4@lists.test"}
    # another tenant's campaign naming this tenant's segment reaches none of its contacts
    theirs = make_campaign(tenant_b.id, [])
    _set(tenant_b.id, theirs, segment_ids=[vip])
    resolve_audience(tenant_b.id, theirs)
    assert _recipients(tenant_b.id, theirs) == set()


def test_sunset_skips_old_contacts_without_recent_engagement(tenant_a) -> None:  # type: ignore[no-untyped-def]
    list_id = make_list(tenant_a.id)
    add_subscribers(tenant_a.id, list_id, 3, domain="sunset.test")
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql("UPDATE contacts SET created_at = now() - interval '400 days' "
                             "WHERE email IN ('user0@sunset.test', 'user1@sunset.test')")
        database.execute_sql(
            "INSERT INTO events (tenant_id, type, contact_id, occurred_at) "
            "SELECT %s, 'clicked', id, now() - interval '10 days' FROM contacts "
            "WHERE email = 'user1@sunset.test'", (str(tenant_a.id),))
    campaign = make_campaign(tenant_a.id, [list_id])
    _set(tenant_a.id, campaign, sunset_days=180)
    resolve_audience(tenant_a.id, campaign)
    # user0: old and silent, skipped; user1: old but clicked; user2: new
    assert _recipients(tenant_a.id, campaign) == {"user1@sunset.test", "user2@sunset.test"}
