"""Tests of the example plugin, on real PostgreSQL and Redis (swiftmail_core.testing)."""

import uuid

import swiftmail_example_plugin

from swiftmail_core.events import EventRecord, record_events
from swiftmail_core.transports import OutboundMessage, Outcome


def test_the_host_loads_the_plugin_through_its_entry_point(plugin_manager):
    names = {info.name for info in plugin_manager.plugin_info()}
    assert "example" in names


def test_the_memory_transport_accepts_every_message(plugin_manager):
    transport = plugin_manager.transport("example-memory")
    message = OutboundMessage(7, uuid.uuid4(), "b@x.test", "r@y.test", b"raw", "<m@x>")
    (result,) = transport.send([message])
    assert result.outcome is Outcome.ACCEPTED


def test_the_sink_counts_each_stored_event_once(plugin_manager, tenant_a):
    before = swiftmail_example_plugin.EVENT_COUNTS["opened"]
    event = EventRecord(tenant_a.id, "opened", source_key=f"example:{uuid.uuid4()}")
    record_events([event], plugin_manager)
    record_events([event], plugin_manager)  # a replay is not stored again
    assert swiftmail_example_plugin.EVENT_COUNTS["opened"] == before + 1


def test_the_stored_event_is_visible_to_its_tenant_only(plugin_manager, tenant_a, tenant_b):
    from swiftmail_core.db import tenant_tx

    record_events([EventRecord(tenant_a.id, "clicked", source_key=f"example:{uuid.uuid4()}")],
                  plugin_manager)
    for tenant, expected in ((tenant_a, 1), (tenant_b, 0)):
        with tenant_tx(tenant.id) as database:  # the app role: row level security applies
            count = database.execute_sql(
                "SELECT count(*) FROM events WHERE type = 'clicked'").fetchone()[0]
        assert count == expected


def test_the_api_answers_with_the_plugin_installed(owner_a):
    response = owner_a.get("/v1/contacts")
    assert response.status_code == 200, response.text
