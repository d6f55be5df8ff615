"""Send time in the recipient's zone: not-before times set-based in SQL, claims wait for them."""

from __future__ import annotations

import datetime
import json
import uuid

import pytest

from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.sending import due_tenants, lifecycle, outbox, send_time
from swiftmail_core.sending.audience import resolve_audience
from tests.core.sending.conftest import (
    cancel_leftover_work,
    make_campaign,
    make_list,
    park_other_tenants_work,
)

UTC = datetime.UTC


def _at(text: str) -> datetime.datetime:
    return datetime.datetime.fromisoformat(text).replace(tzinfo=UTC)


def _contacts(tenant_id, list_id, zones: dict[str, object]) -> None:  # type: ignore[no-untyped-def]
    """Subscribe one contact per address; a zone of None leaves the attribute out."""
    with tenant_tx(tenant_id) as database:
        for email, zone in zones.items():
            attributes = {} if zone is None else {"timezone": zone}
            database.execute_sql(
                "WITH c AS (INSERT INTO contacts (tenant_id, email, attributes) "
                "VALUES (%s, %s, %s::jsonb) RETURNING id) "
                "INSERT INTO subscriptions (tenant_id, list_id, contact_id, status) "
                "SELECT %s, %s, id, 'confirmed' FROM c",
                (str(tenant_id), email, json.dumps(attributes), str(tenant_id), str(list_id)))


def _tenant_zone(tenant_id, zone: str | None) -> None:  # type: ignore[no-untyped-def]
    with system_tx() as database:
        database.execute_sql(
            "UPDATE tenants SET settings = CASE WHEN %s::text IS NULL THEN settings - 'timezone' "
            "ELSE settings || jsonb_build_object('timezone', %s::text) END WHERE id = %s",
            (zone, zone, str(tenant_id)))


def _local_campaign(tenant_id, list_id, local_time: str,  # type: ignore[no-untyped-def]
                    reference: datetime.datetime) -> uuid.UUID:
    campaign = make_campaign(tenant_id, [list_id])
    with tenant_tx(tenant_id) as database:
        database.execute_sql(
            "UPDATE campaigns SET local_send_time = %s, scheduled_at = %s WHERE id = %s",
            (local_time, reference, str(campaign)))
    return campaign


def _not_before(tenant_id, campaign) -> dict[str, datetime.datetime]:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id) as database:
        return {email: at for email, at in database.execute_sql(
            "SELECT email, next_attempt_at FROM messages WHERE campaign_id = %s",
            (str(campaign),))}


def _fallbacks(tenant_id, campaign) -> int:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id) as database:
        return int(database.execute_sql(
            "SELECT timezone_fallbacks FROM campaigns WHERE id = %s",
            (str(campaign),)).fetchone()[0])


def test_each_recipient_gets_the_local_time_of_its_own_zone(tenant_a) -> None:  # type: ignore[no-untyped-def]
    _tenant_zone(tenant_a.id, "Europe/Oslo")
    list_id = make_list(tenant_a.id)
    _contacts(tenant_a.id, list_id, {
        "tokyo@z.test": "Asia/Tokyo", "ny@z.test": "America/New_York",
        "kolkata@z.test": "Asia/Kolkata", "none@z.test": None,
        "mars@z.test": "Mars/Olympus_Mons", "number@z.test": 5, "lower@z.test": "europe/oslo"})
    campaign = _local_campaign(tenant_a.id, list_id, "09:00", _at("2026-06-01T00:00:00"))
    # small ranges: the zone and the count run range by range
    assert resolve_audience(tenant_a.id, campaign, batch_size=2) == 7
    assert _not_before(tenant_a.id, campaign) == {
        "tokyo@z.test": _at("2026-06-01T00:00:00"),    # 09:00 JST is the reference itself
        "ny@z.test": _at("2026-06-01T13:00:00"),       # 09:00 EDT
        "kolkata@z.test": _at("2026-06-01T03:30:00"),  # 09:00 IST (+05:30)
        "none@z.test": _at("2026-06-01T07:00:00"),     # the tenant's zone: 09:00 CEST
        "mars@z.test": _at("2026-06-01T07:00:00"),     # unknown zone: the tenant's
        "number@z.test": _at("2026-06-01T07:00:00"),
        "lower@z.test": _at("2026-06-01T07:00:00"),    # names match exactly
    }
    assert _fallbacks(tenant_a.id, campaign) == 3
    # a second run (a crash after the ranges committed) writes and counts nothing again
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql("UPDATE campaigns SET audience_resolved_at = NULL WHERE id = %s",
                             (str(campaign),))
    assert resolve_audience(tenant_a.id, campaign, batch_size=2) == 7
    assert _fallbacks(tenant_a.id, campaign) == 3
    _tenant_zone(tenant_a.id, None)


def test_without_a_tenant_zone_the_fallback_is_utc(tenant_a) -> None:  # type: ignore[no-untyped-def]
    _tenant_zone(tenant_a.id, "Not/AZone")  # a bad setting written behind the API's back
    list_id = make_list(tenant_a.id)
    _contacts(tenant_a.id, list_id, {"a@utc.test": None, "b@utc.test": "Nowhere"})
    campaign = _local_campaign(tenant_a.id, list_id, "09:00", _at("2026-06-01T10:00:00"))
    resolve_audience(tenant_a.id, campaign)
    # 09:00 UTC has passed at the reference: the next day's
    assert set(_not_before(tenant_a.id, campaign).values()) == {_at("2026-06-02T09:00:00")}
    assert _fallbacks(tenant_a.id, campaign) == 1
    _tenant_zone(tenant_a.id, None)


@pytest.mark.parametrize(("zone", "local_time", "reference", "expected"), [
    # spring forward (New York, 2026-03-08 02:00 -> 03:00): 02:30 does not exist,
    # it reads as standard time, i.e. 03:30 EDT
    ("America/New_York", "02:30", "2026-03-08T05:00:00", "2026-03-08T07:30:00"),
    # fall back (2026-11-01 02:00 -> 01:00): 01:30 happens twice, the later one (EST)
    ("America/New_York", "01:30", "2026-11-01T04:00:00", "2026-11-01T06:30:00"),
    # a start after the first 01:30 (EDT) still gets the second one the same day
    ("America/New_York", "01:30", "2026-11-01T05:45:00", "2026-11-01T06:30:00"),
    # the next day across a DST change keeps the wall clock (09:00 EST, then 09:00 EDT)
    ("America/New_York", "09:00", "2026-03-07T20:00:00", "2026-03-08T13:00:00"),
    # Europe: 2026-03-29 02:00 CET -> 03:00 CEST; 02:15 reads as 03:15 CEST
    ("Europe/Berlin", "02:15", "2026-03-28T23:30:00", "2026-03-29T01:15:00"),
    # Lord Howe moves by half an hour (2026-04-05 02:00 +11 -> 01:30 +10:30)
    ("Australia/Lord_Howe", "01:45", "2026-04-04T13:00:00", "2026-04-04T15:15:00"),
    # a day that does not exist at all (Samoa skipped 2011-12-30)
    ("Pacific/Apia", "09:00", "2011-12-29T21:00:00", "2011-12-30T19:00:00"),
])
def test_dst_edges(tenant_database, zone: str, local_time: str, reference: str,  # type: ignore[no-untyped-def]
                   expected: str) -> None:
    assert send_time.local_not_before(tenant_database, zone, local_time,
                                      _at(reference)) == _at(expected)


def test_dst_edges_through_the_audience(tenant_a) -> None:  # type: ignore[no-untyped-def]
    list_id = make_list(tenant_a.id)
    _contacts(tenant_a.id, list_id, {"ny@dst.test": "America/New_York",
                                     "berlin@dst.test": "Europe/Berlin"})
    campaign = _local_campaign(tenant_a.id, list_id, "02:30", _at("2026-03-07T12:00:00"))
    resolve_audience(tenant_a.id, campaign)
    assert _not_before(tenant_a.id, campaign) == {
        "ny@dst.test": _at("2026-03-08T07:30:00"),      # 02:30 does not exist: 03:30 EDT
        "berlin@dst.test": _at("2026-03-08T01:30:00"),  # 02:30 CET, no change there yet
    }


def _due_rows(tenant_id) -> list[str]:  # type: ignore[no-untyped-def]
    claimed = outbox.claim_batch(limit=100)
    mine = [message for message in claimed if message.tenant_id == tenant_id]
    outbox.release([message for message in claimed if message.tenant_id != tenant_id])
    return sorted(message.email for message in mine)


def test_claims_wait_for_each_recipients_time_and_pause_keeps_it(tenant_a) -> None:  # type: ignore[no-untyped-def]
    park_other_tenants_work(tenant_a.id)
    now = datetime.datetime.now(UTC)
    reference = now - datetime.timedelta(minutes=30)
    # the local time that was 20 minutes ago in UTC: due now there, ~21 hours off at UTC+3
    local_time = (now - datetime.timedelta(minutes=20)).strftime("%H:%M")
    list_id = make_list(tenant_a.id)
    _contacts(tenant_a.id, list_id, {"now@claim.test": "Etc/UTC",
                                     "later@claim.test": "Etc/GMT-3"})
    campaign = _local_campaign(tenant_a.id, list_id, local_time, reference)
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql("UPDATE campaigns SET status = 'sending' WHERE id = %s",
                             (str(campaign),))
    resolve_audience(tenant_a.id, campaign)
    later = _not_before(tenant_a.id, campaign)["later@claim.test"]
    assert later > now + datetime.timedelta(hours=20)
    try:
        assert _due_rows(tenant_a.id) == ["now@claim.test"]
        assert _due_rows(tenant_a.id) == []
        # the tenant's hint moved on to the row's time: no claim walks it before then
        with system_tx() as database:
            (hint,) = database.execute_sql(
                "SELECT due_at FROM due_tenants WHERE queue = 'outbox' AND tenant_id = %s",
                (str(tenant_a.id),)).fetchone()
        assert hint == later
        assert str(tenant_a.id) not in due_tenants.due_now()
        # pausing and resuming keeps the row's time
        lifecycle.pause_campaign(tenant_a.id, campaign)
        lifecycle.resume_campaign(tenant_a.id, campaign)
        assert _not_before(tenant_a.id, campaign)["later@claim.test"] == later
        assert _due_rows(tenant_a.id) == []
        # once due (moved here instead of waiting 21 hours), the one claim path takes it
        with tenant_tx(tenant_a.id) as database:
            database.execute_sql(
                "UPDATE messages SET next_attempt_at = now() - interval '1 second' "
                "WHERE campaign_id = %s AND status = 'queued'", (str(campaign),))
        due_tenants.refresh()
        assert _due_rows(tenant_a.id) == ["later@claim.test"]
    finally:
        cancel_leftover_work(tenant_a.id)


def test_tenants_zones_and_counts_stay_their_own(tenant_a, tenant_b) -> None:  # type: ignore[no-untyped-def]
    _tenant_zone(tenant_a.id, "Asia/Tokyo")
    _tenant_zone(tenant_b.id, "America/Los_Angeles")
    lists = {tenant: make_list(tenant.id) for tenant in (tenant_a, tenant_b)}
    # the same addresses in both tenants, with different zones
    _contacts(tenant_a.id, lists[tenant_a], {"x@both.test": "Bad/Zone", "y@both.test": None})
    _contacts(tenant_b.id, lists[tenant_b], {"x@both.test": "Europe/London",
                                             "y@both.test": "Bad/Zone"})
    reference = _at("2026-06-01T00:00:00")
    campaigns = {tenant: _local_campaign(tenant.id, lists[tenant], "09:00", reference)
                 for tenant in (tenant_a, tenant_b)}
    for tenant, campaign in campaigns.items():
        resolve_audience(tenant.id, campaign)
    assert _not_before(tenant_a.id, campaigns[tenant_a]) == {
        "x@both.test": _at("2026-06-01T00:00:00"), "y@both.test": _at("2026-06-01T00:00:00")}
    assert _not_before(tenant_b.id, campaigns[tenant_b]) == {
        "x@both.test": _at("2026-06-01T08:00:00"), "y@both.test": _at("2026-06-01T16:00:00")}
    assert _fallbacks(tenant_a.id, campaigns[tenant_a]) == 1
    assert _fallbacks(tenant_b.id, campaigns[tenant_b]) == 1
    # tenant B's transaction sees none of tenant A's rows
    with tenant_tx(tenant_b.id) as database:
        assert database.execute_sql("SELECT count(*) FROM messages WHERE campaign_id = %s",
                                    (str(campaigns[tenant_a]),)).fetchone()[0] == 0
    _tenant_zone(tenant_a.id, None)
    _tenant_zone(tenant_b.id, None)


def test_an_ab_tests_rest_keeps_its_local_time(tenant_a) -> None:  # type: ignore[no-untyped-def]
    from swiftmail_core.ab_tests.decision import decide

    campaign = make_campaign(tenant_a.id, [])
    now = datetime.datetime.now(UTC)
    ahead, passed = now + datetime.timedelta(hours=5), now - datetime.timedelta(hours=30)
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql(
            "UPDATE campaigns SET status = 'sending', ab_metric = 'manual', ab_test_percent = 20, "
            "audience_resolved_at = now(), local_send_time = '09:00' WHERE id = %s",
            (str(campaign),))
        for email, at in (("ahead@ab.test", ahead), ("passed@ab.test", passed)):
            database.execute_sql(
                "INSERT INTO messages (tenant_id, campaign_id, email, kind, transport, status, "
                "next_attempt_at) VALUES (%s, %s, %s, 'campaign', 'none', 'waiting', %s)",
                (str(tenant_a.id), str(campaign), email, at))
        assert decide(database, tenant_a.id, campaign, "A", "manual", counts={}) == 2
    try:
        got = _not_before(tenant_a.id, campaign)
        assert got["ahead@ab.test"] == ahead  # still to come: kept
        # passed: the next 09:00 in the recipient's zone (no contact: the tenant's, UTC)
        nine = now.replace(hour=9, minute=0, second=0, microsecond=0)
        assert got["passed@ab.test"] == (nine if nine >= now else nine + datetime.timedelta(days=1))
    finally:
        cancel_leftover_work(tenant_a.id)


def test_an_ab_tests_rest_keeps_its_local_time_across_a_dst_change(tenant_a) -> None:  # type: ignore[no-untyped-def]
    # Regression: a row whose time had passed moved by whole days of 24 hours, so
    # with a daylight saving change between its time and the release it went an
    # hour early or late on the recipient's clock.
    import zoneinfo

    from swiftmail_core.ab_tests.decision import decide

    zone = zoneinfo.ZoneInfo("America/New_York")
    now = datetime.datetime.now(UTC)
    offset_now = now.astimezone(zone).utcoffset()
    day = now.astimezone(zone).date()
    for back in range(2, 400):  # 09:00 New York on a day with the other offset
        then = datetime.datetime.combine(day - datetime.timedelta(days=back),
                                         datetime.time(9, 0), tzinfo=zone)
        if then.utcoffset() != offset_now:
            break
    campaign = make_campaign(tenant_a.id, [])
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql(
            "UPDATE campaigns SET status = 'sending', ab_metric = 'manual', ab_test_percent = 20, "
            "audience_resolved_at = now(), local_send_time = '09:00' WHERE id = %s",
            (str(campaign),))
        database.execute_sql(
            "WITH c AS (INSERT INTO contacts (tenant_id, email, attributes) "
            "VALUES (%s, 'ny@ab.test', '{\"timezone\": \"America/New_York\"}') RETURNING id) "
            "INSERT INTO messages (tenant_id, campaign_id, contact_id, email, kind, transport, "
            "status, next_attempt_at) SELECT %s, %s, id, 'ny@ab.test', 'campaign', 'none', "
            "'waiting', %s FROM c",
            (str(tenant_a.id), str(tenant_a.id), str(campaign), then.astimezone(UTC)))
        assert decide(database, tenant_a.id, campaign, "A", "manual", counts={}) == 1
    try:
        got = _not_before(tenant_a.id, campaign)["ny@ab.test"]
        assert got.astimezone(zone).time() == datetime.time(9, 0)  # nine on their clock
        assert now - datetime.timedelta(minutes=5) <= got <= now + datetime.timedelta(days=1)
    finally:
        cancel_leftover_work(tenant_a.id)
