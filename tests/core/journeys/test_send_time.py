"""Journey emails at a local time: the contact's zone, else the tenant's, counted fallbacks."""

from __future__ import annotations

import datetime
import zoneinfo

import pytest

from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.errors import ValidationError
from swiftmail_core.journeys import runner
from swiftmail_core.journeys.definition import parse_steps
from swiftmail_core.journeys.enrollment import enroll_event
from swiftmail_core.journeys.stats import journey_stats
from tests.core.journeys.conftest import email_step, enrollment, make_contact, make_journey


def _tenant_zone(tenant_id, zone) -> None:  # type: ignore[no-untyped-def]
    with system_tx() as database:
        database.execute_sql(
            "UPDATE tenants SET settings = settings || jsonb_build_object('timezone', %s::text) "
            "WHERE id = %s", (zone, str(tenant_id)))


def _fire(tenant_id, contact_id) -> None:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id) as database:
        enroll_event(database, tenant_id, "signup", contact_id, {})


def _mail(tenant_id, contact_id) -> tuple[datetime.datetime, dict]:  # type: ignore[no-untyped-def]
    with tenant_tx(tenant_id) as database:
        return database.execute_sql(
            "SELECT next_attempt_at, payload FROM messages WHERE contact_id = %s "
            "AND kind = 'journey'", (contact_id,)).fetchone()


def test_a_send_step_with_a_local_time_waits_for_it_in_the_contacts_zone(tenant_a) -> None:  # type: ignore[no-untyped-def]
    _tenant_zone(tenant_a.id, "Europe/Oslo")
    journey = make_journey(tenant_a.id, [{**email_step("morning"), "local_send_time": "09:00"}])
    contacts = {
        "Asia/Tokyo": make_contact(tenant_a.id, "tokyo@jst.test", timezone="Asia/Tokyo"),
        "Europe/Oslo": make_contact(tenant_a.id, "bad@jst.test", timezone="Bad/Zone"),
        "Europe/Oslo ": make_contact(tenant_a.id, "none@jst.test"),
    }
    before = datetime.datetime.now(datetime.UTC)
    for contact in contacts.values():
        _fire(tenant_a.id, contact)
    runner.run_due()
    for zone, contact in contacts.items():
        at, payload = _mail(tenant_a.id, contact)
        local = at.astimezone(zoneinfo.ZoneInfo(zone.strip()))
        assert (local.hour, local.minute) == (9, 0)
        assert before - datetime.timedelta(minutes=1) <= at <= before + datetime.timedelta(days=1)
        assert payload["timezone"] == zone.strip()
        assert payload.get("timezone_fallback", False) is (contact == contacts["Europe/Oslo"])
        assert enrollment(tenant_a.id, journey, contact)["status"] == "completed"
    with tenant_tx(tenant_a.id) as database:
        stats = journey_stats(database, tenant_a.id, journey)
    assert stats["steps"][0]["timezone_fallbacks"] == 1


def test_wait_until_falls_back_to_the_tenants_zone_not_utc(tenant_a) -> None:  # type: ignore[no-untyped-def]
    _tenant_zone(tenant_a.id, "Asia/Tokyo")
    journey = make_journey(tenant_a.id, [{"type": "wait", "until": {"time": "09:00"}},
                                         email_step("later")])
    contact = make_contact(tenant_a.id, "badzone@jst.test", timezone="Not/AZone")
    _fire(tenant_a.id, contact)
    runner.run_due()
    local = enrollment(tenant_a.id, journey, contact)["next_run_at"].astimezone(
        zoneinfo.ZoneInfo("Asia/Tokyo"))
    assert (local.hour, local.minute) == (9, 0)


@pytest.mark.parametrize("bad", ["9:00", "24:00", 900, ""])
def test_a_bad_local_send_time_names_the_step(bad) -> None:  # type: ignore[no-untyped-def]
    with pytest.raises(ValidationError) as caught:
        parse_steps([email_step("a"), {**email_step("b"), "local_send_time": bad}])
    assert caught.value.errors[0]["field"] == "steps[1].local_send_time"
