"""Event recording: exactly once per source key, rollups, plugin fan-out."""

from __future__ import annotations

import datetime
import uuid

from swiftmail_core.db import app_db, tenant_tx
from swiftmail_core.events import EventRecord, record_events
from swiftmail_core.hookspecs import hookimpl
from swiftmail_core.suppressions import SuppressionEntry, suppress


def _campaign(tenant_id: uuid.UUID) -> uuid.UUID:
    campaign_id = uuid.uuid4()
    with tenant_tx(tenant_id):
        app_db.execute_sql(
            "INSERT INTO campaigns (tenant_id, id, name) VALUES (%s, %s, 'c')",
            (str(tenant_id), str(campaign_id)),
        )
    return campaign_id


def _rollups(tenant_id: uuid.UUID) -> dict[tuple[str, str], int]:
    with tenant_tx(tenant_id):
        rows = app_db.execute_sql(
            "SELECT metric, dimension, sum(value) FROM campaign_rollups GROUP BY 1, 2"
        ).fetchall()
    return {(metric, dimension): int(value) for metric, dimension, value in rows}


def test_retried_batch_counts_once(tenant_a, plugin_manager) -> None:
    campaign_id = _campaign(tenant_a.id)
    seen = []

    class Sink:
        @hookimpl
        def swiftmail_tracking_event(self, event):  # type: ignore[no-untyped-def]
            seen.append(event)

    plugin_manager.register(Sink(), "sink")
    moment = datetime.datetime(2026, 11, 27, 10, 15, tzinfo=datetime.UTC)
    batch = [
        EventRecord(tenant_a.id, "delivered", moment, message_id=1, campaign_id=campaign_id,
                    email="ann@gmail.com", source_key="relay:1"),
        EventRecord(tenant_a.id, "bounced", moment, message_id=2, campaign_id=campaign_id,
                    email="bob@yahoo.com", bounce_class="hard", source_key="relay:2"),
        EventRecord(tenant_a.id, "opened", moment, message_id=1, campaign_id=campaign_id,
                    is_machine=True, source_key="open:1"),
    ]
    assert len(record_events(batch, plugin_manager)) == 3
    assert record_events(batch, plugin_manager) == []  # the retry stores nothing
    assert [event.type for event in seen] == ["delivered", "bounced", "opened"]
    rollups = _rollups(tenant_a.id)
    assert rollups[("delivered", "")] == 1
    assert rollups[("delivered", "domain:gmail.com")] == 1
    assert rollups[("bounced.hard", "")] == 1
    assert rollups[("opened.machine", "")] == 1


def test_events_are_visible_only_to_their_tenant(tenant_a, tenant_b) -> None:
    record_events([EventRecord(tenant_a.id, "complained", email="x@example.com")])
    with tenant_tx(tenant_b.id):
        assert app_db.execute_sql("SELECT count(*) FROM events").fetchone()[0] == 0
    with tenant_tx(tenant_a.id):
        assert app_db.execute_sql("SELECT count(*) FROM events").fetchone()[0] == 1


def test_suppress_marks_contacts_and_keeps_first_reason(tenant_a) -> None:
    with tenant_tx(tenant_a.id):
        app_db.execute_sql(
            "INSERT INTO contacts (tenant_id, id, email) VALUES (%s, %s, 'Dee@Example.com')",
            (str(tenant_a.id), str(uuid.uuid4())),
        )
    entry = SuppressionEntry(tenant_a.id, "dee@example.com", "hard_bounce", "relay", "550 5.1.1")
    assert suppress([entry]) == 1
    assert suppress([SuppressionEntry(tenant_a.id, "DEE@example.com", "complaint")]) == 0
    with tenant_tx(tenant_a.id):
        reason = app_db.execute_sql("SELECT reason FROM suppressions").fetchone()[0]
        status = app_db.execute_sql("SELECT status FROM contacts").fetchone()[0]
    assert (reason, status) == ("hard_bounce", "bounced")


def test_times_and_ids_are_stored_exactly(tenant_a) -> None:
    """Ids formatted once per record reach every table; times keep their instant."""
    campaign_id = _campaign(tenant_a.id)
    moment = datetime.datetime(2026, 12, 7, 18, 5, 9, 123456,
                               tzinfo=datetime.timezone(datetime.timedelta(hours=2)))
    record = EventRecord(tenant_a.id, "clicked", moment, message_id=7, campaign_id=campaign_id,
                         link_id=3, source_key="click:7")
    assert (record.tenant_text, record.campaign_text) == (str(tenant_a.id), str(campaign_id))
    assert record_events([record]) == [record]
    with tenant_tx(tenant_a.id):
        stored = app_db.execute_sql(
            "SELECT occurred_at, campaign_id::text FROM events WHERE source_key = 'click:7'"
        ).fetchone()
        first = app_db.execute_sql(
            "SELECT first_at FROM engagement_firsts WHERE message_id = 7 AND link_id = 3"
        ).fetchone()
    assert stored == (moment, str(campaign_id))
    assert first == (moment,)
    assert _rollups(tenant_a.id)[("clicked.unique.human", "link:3")] == 1
