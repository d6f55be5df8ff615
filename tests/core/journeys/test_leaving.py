"""Leaving a journey ends its mail not yet sent, as an unsubscribe does campaign mail."""

from __future__ import annotations

import uuid

from swiftmail_core.db import tenant_tx
from swiftmail_core.journeys import runner
from swiftmail_core.journeys.enrollment import enroll_event
from swiftmail_core.self_service.changes import unsubscribe
from tests.core.journeys.conftest import (
    email_step,
    enrollment,
    journey_mail,
    make_contact,
    make_journey,
)
from tests.core.sending.conftest import make_list

WAIT = {"id": "pause", "type": "wait", "seconds": 3600}


def test_a_list_unsubscribe_cancels_the_journey_email_still_queued(tenant_a) -> None:  # type: ignore[no-untyped-def]
    journey = make_journey(tenant_a.id, [email_step("welcome"), WAIT, email_step("tips")])
    contact = make_contact(tenant_a.id, "leaver@journey.test")
    list_id = make_list(tenant_a.id)
    with tenant_tx(tenant_a.id) as database:
        database.execute_sql(
            "INSERT INTO subscriptions (tenant_id, list_id, contact_id, status) "
            "VALUES (%s, %s, %s, 'confirmed')", (str(tenant_a.id), str(list_id), contact))
        assert enroll_event(database, tenant_a.id, "signup", contact, {}) == [journey]
    runner.run_due()
    assert [m["status"] for m in journey_mail(tenant_a.id, contact)] == ["queued"]
    # One list: the contact stays active and unsuppressed, so the claim would send it.
    assert unsubscribe(tenant_a.id, uuid.UUID(contact), list_id, source="test")
    assert enrollment(tenant_a.id, journey, contact)["status"] == "exited"
    assert [m["status"] for m in journey_mail(tenant_a.id, contact)] == ["cancelled"]
