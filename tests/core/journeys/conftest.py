"""Helpers for journey tests: contacts, lists and journeys in plain SQL."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import pytest

from swiftmail_core.db import system_tx, tenant_tx
from swiftmail_core.journeys.service import create_journey

SENDER = "news@sender.test"


def cancel_journey_mail() -> None:
    """Cancel queued journey mail, so no later test's worker or sink sees it."""
    with system_tx() as database:
        database.execute_sql("UPDATE messages SET status = 'cancelled' WHERE kind = 'journey' "
                             "AND status IN ('queued', 'deferred')")


@pytest.fixture(autouse=True)
def _no_leftover_mail(request: pytest.FixtureRequest) -> Iterator[None]:
    yield
    if "tenant_a" in request.fixturenames:
        cancel_journey_mail()


def email_step(step_id: str, subject: str = "Hi {{ contact.name }}") -> dict[str, Any]:
    """Return a send_email step."""
    return {"id": step_id, "type": "send_email", "from_email": SENDER, "subject": subject,
            "text": "Hello {{ contact.data.plan }}"}


def make_contact(tenant_id: uuid.UUID, email: str, **attributes: Any) -> str:
    """Insert an active contact; return its id."""
    import json

    contact_id = str(uuid.uuid4())
    with tenant_tx(tenant_id) as database:
        database.execute_sql(
            "INSERT INTO contacts (tenant_id, id, email, name, attributes) "
            "VALUES (%s, %s, %s, 'N', %s::jsonb)",
            (str(tenant_id), contact_id, email, json.dumps(attributes)))
    return contact_id


def make_journey(tenant_id: uuid.UUID, steps: list[dict[str, Any]], *,
                 trigger: dict[str, Any] | None = None, status: str = "active") -> uuid.UUID:
    """Create a journey (active by default) triggered by the event 'signup'."""
    with tenant_tx(tenant_id) as database:
        journey_id = create_journey(
            database, tenant_id, name=f"j-{uuid.uuid4().hex[:8]}",
            trigger=trigger or {"type": "event", "name": "signup"}, steps=steps)
        database.execute_sql("UPDATE journeys SET status = %s WHERE id = %s",
                             (status, str(journey_id)))
    return journey_id


def enrollment(tenant_id: uuid.UUID, journey_id: uuid.UUID, contact_id: str) -> dict[str, Any]:
    """Return the enrollment row as a dict."""
    with tenant_tx(tenant_id) as database:
        cursor = database.execute_sql(
            "SELECT * FROM journey_enrollments WHERE journey_id = %s AND contact_id = %s",
            (str(journey_id), contact_id))
        names = [column[0] for column in cursor.description]
        row = cursor.fetchone()
        return dict(zip(names, row, strict=True)) if row else {}


def journey_mail(tenant_id: uuid.UUID, contact_id: str) -> list[dict[str, Any]]:
    """Return the contact's journey ledger rows (step id, status), oldest first."""
    with tenant_tx(tenant_id) as database:
        return [{"step_id": step, "status": status, "payload": payload}
                for step, status, payload in database.execute_sql(
                    "SELECT payload->>'step_id', status, payload FROM messages "
                    "WHERE contact_id = %s AND kind = 'journey' ORDER BY id", (contact_id,))]


def make_due(tenant_id: uuid.UUID) -> None:
    """Pretend every wait of the tenant's enrollments (and every lease) is over."""
    with system_tx() as database:
        database.execute_sql(
            "UPDATE journey_enrollments SET next_run_at = now() - interval '1 second', "
            "lease_expires_at = CASE WHEN lease_expires_at IS NULL THEN NULL "
            "ELSE now() - interval '1 second' END WHERE tenant_id = %s", (str(tenant_id),))
